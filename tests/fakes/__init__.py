"""Fake chat platforms served on 127.0.0.1 for end-to-end tests of the real client libraries."""
