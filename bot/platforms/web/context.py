"""What the HTTP routes need, stored once on the app as ``app.state.web``."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from bot.config import Config
from bot.core.service import MusicService


@dataclass
class Progress:
    """The latest progress of a job this process renders (from the worker's events)."""

    fraction: float
    eta_s: float | None


@dataclass
class WebContext:
    """The use cases and settings the routes call; one per server."""

    service: MusicService
    config: Config
    ready: bool = True
    """False while the models load and the worker warms up: generating answers 503."""
    progress: dict[int, Progress] = field(default_factory=dict)
    """Running jobs' progress, kept by the API frontend from job events."""


async def web_context(request: Request) -> WebContext:
    """FastAPI dependency: the server's :class:`WebContext`.

    ``async`` although it awaits nothing: FastAPI runs a plain ``def`` dependency in its
    thread pool, a thread hop per request for a dictionary lookup."""
    context: WebContext = request.app.state.web
    return context
