"""Pay FastAPI's first-request costs at start-up, not on members' first requests.

FastAPI builds each router's per-route state (request models, dependency graphs) lazily, on
the first request that reaches the router, and the OpenAPI document on its first read: about
80 ms of CPU here. Fifty keys whose first requests arrived together all waited behind it
(p99 accept latency 700 ms, every later request under 80 ms; docs/performance.md). One
request that matches no route walks every router, so it builds all of them without running
a handler, touching the database or a rate-limit budget.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI

WARM_UP_PATH = "/__musicbot_warm_up__"
"""A path no route serves (the request ends in 404 after every router was built)."""


async def warm_up(app: FastAPI) -> None:
    """Build the OpenAPI document and every router's route state now."""
    app.openapi()
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": WARM_UP_PATH, "raw_path": WARM_UP_PATH.encode(),
        "query_string": b"", "root_path": "", "headers": [],
        "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        return None  # the 404 goes nowhere

    await app(scope, receive, send)
