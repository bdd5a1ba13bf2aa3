"""The HTTP frontend: the ``/v1`` API in the shape of the hosted music APIs, and track pages.

A frontend like Discord and Slack: it parses, authenticates, calls the core and renders; it
imports neither torch nor the chat libraries. :func:`bot.platforms.web.server.create_app`
builds the ASGI app.
"""
