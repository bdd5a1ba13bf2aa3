"""What the HTTP routes need, stored once on the app as ``app.state.web``."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from bot.config import Config
from bot.core.service import MusicService


@dataclass
class WebContext:
    """The use cases and settings the routes call; one per server."""

    service: MusicService
    config: Config


def web_context(request: Request) -> WebContext:
    """FastAPI dependency: the server's :class:`WebContext`."""
    context: WebContext = request.app.state.web
    return context
