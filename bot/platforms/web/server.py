"""The ASGI app: the API and the track pages over one :class:`WebContext`."""

from __future__ import annotations

from fastapi import FastAPI

from bot.platforms.web import api, pages
from bot.platforms.web.context import WebContext


def create_app(context: WebContext) -> FastAPI:
    """The HTTP frontend's app; OpenAPI at ``/openapi.json``, interactive docs at ``/docs``."""
    app = FastAPI(title="musicbot", summary="Original music from MusicGen, by API.")
    app.state.web = context
    app.include_router(api.router)
    app.include_router(pages.router)
    return app
