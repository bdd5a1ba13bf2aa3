"""Who is calling: the API key in ``Authorization: Bearer …`` (or ``X-API-Key``).

A key acts as its member (:mod:`bot.core.apikeys`). Besides the core's limits on music
requests (rate, queue), each key has a small request budget here: polling in a tight loop
must not starve other members of the database's reader.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from bot.core.apikeys import ApiKey, UnknownKey
from bot.core.models import AccountKey, Actor
from bot.platforms.web.context import WebContext, web_context
from bot.platforms.web.errors import ApiError, retry_after

REQUESTS_PER_S = 20.0
"""Sustained requests per key per second (a player polling every second uses 1)."""
BURST = 60.0
"""Requests a key may make at once before the per-second budget applies."""

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer mb_…")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The same key")


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


async def caller(
    request: Request,
    context: Annotated[WebContext, Depends(web_context)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
    header: Annotated[str | None, Security(_header)] = None,
) -> Caller:
    """FastAPI dependency: the calling member, or 401 / 429."""
    raw = bearer.credentials if bearer is not None else header
    if not raw:
        raise ApiError(401, "missing_api_key", "Send your API key as 'Authorization: Bearer "
                       "<key>' (get one with /apikey create).",
                       headers={"WWW-Authenticate": "Bearer"})
    try:
        key = await context.service.apikeys.authenticate(raw.strip())
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
