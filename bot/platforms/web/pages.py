"""Shared track pages (``/t/{share_id}``): player, waveform and downloads, no external assets."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
