"""One JSON error shape for the whole API: ``{"error": {"code", "message", "field"?, ...}}``.

Codes are stable (clients branch on them; docs/api.md lists them); messages are for people.
Core errors map to HTTP statuses here and nowhere else, so a route only raises.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from bot.core.apikeys import UnknownKey
from bot.core.db import DatabaseBusy
from bot.core.errors import (
    InsufficientTokens,
    InvalidRequest,
    JobNotCancellable,
    JobNotFound,
    LimitReached,
    MusicBotError,
    NotAuthorized,
    NothingToCancel,
    ServiceUnavailable,
)

log = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER_S = 30
"""Retry-After when the core knows no better time (a member's own queue is full)."""
FIELD_NAMES = {"request id": "Idempotency-Key", "format": "output_format", "job": "id"}
"""Core field names that the API spells differently."""


class ApiError(Exception):
    """An error the API answers with as it is (status, stable code, message, extras)."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> JSONResponse:
        """The JSON response for this error."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        body.update(self.extra)
        return JSONResponse({"error": body}, status_code=self.status, headers=self.headers)


def retry_after(seconds: float | None) -> dict[str, str]:
    """A ``Retry-After`` header in whole seconds (at least 1)."""
    wait = DEFAULT_RETRY_AFTER_S if seconds is None else max(1, math.ceil(seconds))
    return {"Retry-After": str(wait)}


def from_core(exc: MusicBotError) -> ApiError:
    """The API error for a core error (the message is the one chat members read)."""
    message = exc.user_message
    if isinstance(exc, UnknownKey):
        return ApiError(401, "invalid_api_key", message,
                        headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, InvalidRequest):
        field = FIELD_NAMES.get(exc.field, exc.field)
        return ApiError(422, "invalid_request", message, field=field, reason=exc.reason)
    if isinstance(exc, InsufficientTokens):
        return ApiError(402, "insufficient_tokens", message, balance=exc.balance,
                        price=exc.price)
    if isinstance(exc, LimitReached):
        return ApiError(429, "rate_limited", message, limit=exc.limit,
                        headers=retry_after(exc.retry_after_s))
    if isinstance(exc, NotAuthorized):
        return ApiError(403, "forbidden", message)
    if isinstance(exc, JobNotFound):
        return ApiError(404, "track_not_found", f"Track {exc.job_id} was not found.")
    if isinstance(exc, (JobNotCancellable, NothingToCancel)):
        return ApiError(409, "not_cancellable", message)
    if isinstance(exc, ServiceUnavailable):
        return ApiError(503, "unavailable", message, headers=retry_after(5))
    if isinstance(exc, DatabaseBusy):
        return ApiError(503, "busy", message, headers=retry_after(1))
    return ApiError(400, getattr(exc, "code", "error"), message)


def validation_error(exc: RequestValidationError) -> ApiError:
    """FastAPI's validation errors in our shape: the first problem names its field."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    field = ".".join(loc) or None
    reason = str(first.get("msg", "is not valid"))
    if first.get("type") == "extra_forbidden":
        reason = "is not a field of this request (see /docs)"
    where = f"Invalid {field}: " if field else "Invalid request: "
    return ApiError(422, "invalid_request", where + reason, field=field,
                    reason=reason, limit=_limit(first))


def _limit(error: Any) -> dict[str, Any] | None:
    ctx = error.get("ctx") if isinstance(error, dict) else None
    if not ctx:
        return None
    known = {k: v for k, v in ctx.items() if k in ("ge", "le", "gt", "lt", "max_length",
                                                      "min_length", "expected")}
    return {k: v if isinstance(v, (int, float, str)) else str(v) for k, v in known.items()} or None


def install(app: FastAPI) -> None:
    """Route every error the app can raise through the one JSON shape."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(MusicBotError)
    async def _core(request: Request, exc: MusicBotError) -> JSONResponse:
        return from_core(exc).response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return ApiError(exc.status_code, code, str(exc.detail),
                        headers=dict(exc.headers or {})).response()

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("API request %s %s failed", request.method, request.url.path, exc_info=exc)
        return ApiError(500, "internal", "Something went wrong on our side; nothing was "
                        "charged unless a track id was returned.").response()
