"""The operator's HTTP endpoint: ``GET /healthz`` (JSON, 200 or 503) and ``GET /metrics``.

Served by the app on ``ops.http_host:ops.http_port`` (off when the port is 0). It shows no
member data: numbers, model keys and platform names only, so it needs no authentication on
loopback; put it behind a firewall or a proxy before exposing it further.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bot.core.db import Database
from bot.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger(__name__)

DB_CHECK_TIMEOUT_S = 2.0
Health = dict[str, Any]


class OpsServer:
    """Answers health checks and scrapes from ``health()`` and ``metrics``."""

    def __init__(self, health: Callable[[], Awaitable[Health]], metrics: Metrics,
                 db: Database) -> None:
        self._health = health
        self._metrics = metrics
        self._db = db
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        """The bound port once started (the configured one)."""

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``. Raises OSError when the address is taken."""
        server = web.Application()
        server.router.add_get("/healthz", self._healthz)
        server.router.add_get("/metrics", self._scrape)
        runner = web.AppRunner(server, access_log=None)  # scrapes every 15 s would flood logs
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("ops endpoint on http://%s:%d (/healthz, /metrics)", host, self.port)

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        report = await self._health()
        return web.json_response(report, status=200 if report["ok"] else 503)

    async def _scrape(self, _request: web.Request) -> web.Response:
        try:
            await self._metrics.refresh(self._db)
        except Exception:  # the database is down: still answer, with the last queue depth
            log.debug("metrics refresh failed", exc_info=True)
        return web.Response(body=self._metrics.render(),
                            headers={"Content-Type": CONTENT_TYPE})


async def database_reachable(db: Database) -> bool:
    """True when the database answers a trivial query within a couple of seconds."""
    if not db.is_open:
        return False
    try:
        await asyncio.wait_for(db.fetchone("SELECT 1"), DB_CHECK_TIMEOUT_S)
    except Exception:
        return False
    return True


def frontend_up(frontend: object) -> bool:
    """A frontend with a connection reports it (``running``); others (console) are always up."""
    return bool(getattr(frontend, "running", True))
