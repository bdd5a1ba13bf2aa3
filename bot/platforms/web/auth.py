"""Who is calling: the API key in ``Authorization: Bearer …`` (or ``X-API-Key``).

A key acts as its member (:mod:`bot.core.apikeys`). Besides the core's limits on music
requests (rate, queue), each key has a small request budget here: polling in a tight loop
must not starve other members of the database's reader.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from bot.core.apikeys import ApiKey, UnknownKey
from bot.core.models import AccountKey, Actor
from bot.platforms.web.context import WebContext
from bot.platforms.web.errors import ApiError, retry_after

REQUESTS_PER_S = 20.0
"""Sustained requests per key per second (a player polling every second uses 1)."""
BURST = 60.0
"""Requests a key may make at once before the per-second budget applies."""

BEARER_SCHEME = "HTTPBearer"
HEADER_SCHEME = "APIKeyHeader"
KEY_HEADER = "X-API-Key"
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    BEARER_SCHEME: {"type": "http", "scheme": "bearer",
                    "description": "Authorization: Bearer mb_…"},
    HEADER_SCHEME: {"type": "apiKey", "in": "header", "name": KEY_HEADER,
                    "description": "The same key"},
}
"""The two ways to send a key, as OpenAPI names them (either one will do)."""


@dataclass(frozen=True)
class Caller:
    """The member behind a request's key."""

    key: ApiKey
    actor: Actor
    account: AccountKey


class KeyBudget:
    """A token bucket per key id (in memory: one server process answers each key)."""

    def __init__(self, rate: float = REQUESTS_PER_S, burst: float = BURST) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[int, tuple[float, float]] = {}

    def take(self, key_id: int, now: float) -> float | None:
        """None if the request may go, else seconds until it could."""
        tokens, then = self._buckets.get(key_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1:
            self._buckets[key_id] = (tokens, now)
            return (1 - tokens) / self.rate
        self._buckets[key_id] = (tokens - 1, now)
        return None


async def caller(request: Request) -> Caller:
    """FastAPI dependency: the calling member, or 401 / 429.

    It reads the two headers itself, with no sub-dependencies: FastAPI solves each
    dependency of each request anew, and the ``HTTPBearer``/``APIKeyHeader`` helpers plus the
    context cost ~6% of an accept's CPU (docs/performance.md, item 10).
    :func:`document_keys` names the headers in the OpenAPI document instead."""
    raw = presented_key(request.headers)
    if not raw:
        raise ApiError(401, "missing_api_key", "Send your API key as 'Authorization: Bearer "
                       "<key>' (get one with /apikey create).",
                       headers={"WWW-Authenticate": "Bearer"})
    context: WebContext = request.app.state.web
    try:
        key = await context.service.apikeys.authenticate(raw)
    except UnknownKey as exc:
        raise ApiError(401, "invalid_api_key", exc.user_message,
                       headers={"WWW-Authenticate": "Bearer"}) from None
    budget: KeyBudget = request.app.state.key_budget
    wait = budget.take(key.id, time.monotonic())
    if wait is not None:
        raise ApiError(429, "rate_limited", "Too many requests with this key; slow down.",
                       limit="requests_per_key", headers=retry_after(wait))
    actor = Actor(key.platform, key.community, key.user, is_admin=key.is_admin,
                  display_name=key.label)
    account = context.service.account_key(key.platform, key.community, key.user)
    return Caller(key, actor, account)


def presented_key(headers: Mapping[str, str]) -> str:
    """The key a request sends: ``Authorization: Bearer <key>``, else ``X-API-Key``; "" if
    neither (another ``Authorization`` scheme counts as none, as in FastAPI's helpers)."""
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return headers.get(KEY_HEADER, "").strip()


def document_keys(app: FastAPI, routes: Iterable[BaseRoute]) -> None:
    """Declare the key headers in ``app``'s OpenAPI document on those of ``routes`` (a
    router's, as included in ``app``) that depend on :func:`caller`: what
    ``Security(HTTPBearer())`` parameters would have declared."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        for route in routes:
            if isinstance(route, APIRoute) and any(
                    dependency.call is caller for dependency in route.dependant.dependencies):
                for method in route.methods or ():
                    schema["paths"][route.path_format][method.lower()]["security"] = [
                        {BEARER_SCHEME: []}, {HEADER_SCHEME: []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
