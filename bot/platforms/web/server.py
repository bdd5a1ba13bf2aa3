"""The ASGI app and the HTTP frontend that serves it inside the bot's own event loop.

FastAPI because its request/response models are pydantic (like the config) and are the
OpenAPI document; uvicorn's ``Server.serve()`` runs as a task of the bot's loop, so the API
shares the :class:`MusicService`, the SQLite writer and the worker with the chat frontends —
no second process, no second writer. :class:`ApiFrontend` is a frontend like Discord's: jobs
made through the API carry ``destination.platform == "api"`` and are "delivered" by marking
them done (the files stay on disk for ``/audio`` and ``/download``) and firing the webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from bot.config import Config
from bot.core.models import EventKind, Job, JobEvent, Track
from bot.core.service import MusicService
from bot.platforms.web import api, errors, pages
from bot.platforms.web.auth import KeyBudget, document_keys
from bot.platforms.web.context import Progress, WebContext
from bot.platforms.web.warmup import warm_up
from bot.platforms.web.webhooks import WebhookSender, completion_hook

log = logging.getLogger(__name__)

WebhookHook = Callable[[Job, Track | None, WebContext], Awaitable[None]]


def create_app(context: WebContext) -> FastAPI:
    """The HTTP frontend's app; OpenAPI at ``/openapi.json``, interactive docs at ``/docs``."""
    app = FastAPI(title="musicbot", summary="Original music from MusicGen, by API.",
                  version="1")
    app.state.web = context
    app.state.key_budget = KeyBudget()
    errors.install(app)
    v1 = api.build_router(context.config)
    app.include_router(v1)
    app.include_router(pages.router)
    document_keys(app, v1.routes)
    return app


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the bot owns SIGINT/SIGTERM and stops us."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ApiFrontend:
    """The HTTP API as a frontend (:class:`bot.core.ports.Frontend`, platform ``api``).

    ``listen()`` opens the port early (the app calls it before the models load) so clients
    get 503 instead of a refused connection; ``start()`` marks it ready; ``stop()`` closes.
    """

    platform = api.PLATFORM

    def __init__(self, config: Config, service: MusicService) -> None:
        self.config = config
        self.service = service
        self.context = WebContext(service, config, ready=False)
        self.app = create_app(self.context)
        self.webhooks = WebhookSender.from_config(config)
        self.webhook: WebhookHook | None = completion_hook(
            self.webhooks, self._webhook_secret, self._webhook_payload)
        """Called after a job of the API ends (done, failed, cancelled): sends the signed
        track object to the job's ``webhook_url``, in the background."""
        self.port: int | None = None
        """The bound port (``api.port: 0`` picks a free one)."""
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the server listens and is ready (``/healthz`` reads it)."""
        return self._task is not None and not self._task.done() and self.context.ready

    async def listen(self) -> None:
        """Bind and serve (generation answers 503 until :meth:`start`)."""
        if self._task is not None:
            return
        settings = uvicorn.Config(self.app, host=self.config.api.host, port=self.config.api.port,
                                  log_config=None, log_level="warning", access_log=False,
                                  lifespan="off")
        # log_config=None: uvicorn's records go through the bot's handlers (and their
        # redaction) instead of a logging setup of its own; no access log: a line per poll.
        self._server = _Server(settings)
        self._task = asyncio.create_task(self._server.serve(), name="api-server")
        while not self._server.started:
            if self._task.done():  # the port is taken: surface uvicorn's reason
                self._task.result()
                raise OSError(f"the API could not listen on {self.config.api.host}:"
                              f"{self.config.api.port}")
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        await warm_up(self.app)
        log.info("HTTP API listening on http://%s:%d (docs at /docs)", self.config.api.host,
                 self.port)

    async def start(self) -> None:
        """Listen if not yet, and accept music requests (models are loaded by now)."""
        await self.listen()
        self.context.ready = True

    async def stop(self) -> None:
        """Stop answering and close the port."""
        self.context.ready = False
        await self.webhooks.aclose()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await self._task
        self._task = self._server = None

    async def notify(self, event: JobEvent) -> None:
        """Keep running jobs' progress for ``GET /v1/music/{id}``; fire the webhook of jobs
        that ended without a track (API clients poll; nothing else to show)."""
        job_id = event.job.id
        if event.kind is EventKind.PROGRESS:
            self.context.progress[job_id] = Progress(event.progress, event.eta_s)
        elif event.kind in (EventKind.FAILED, EventKind.CANCELLED, EventKind.DONE,
                            EventKind.REQUEUED):
            self.context.progress.pop(job_id, None)
            if event.kind in (EventKind.FAILED, EventKind.CANCELLED):
                await self._fire(event.job, None)

    async def deliver(self, job: Job, track: Track) -> None:
        """Nothing to upload: the track is served from disk. Returning marks it delivered."""
        self.context.progress.pop(job.id, None)
        await self._fire(job, track)

    async def _fire(self, job: Job, track: Track | None) -> None:
        if self.webhook is None or not job.destination.extra.get("webhook_url"):
            return
        try:
            await self.webhook(job, track, self.context)
        except Exception:  # a member's webhook never fails the job or its delivery
            log.warning("webhook for job %d failed", job.id, exc_info=True)

    async def _webhook_secret(self, job: Job) -> str | None:
        key_id = job.destination.extra.get("key_id")
        return await self.service.apikeys.webhook_secret(int(key_id)) if key_id else None

    async def _webhook_payload(self, job: Job, track: Track | None,
                               context: WebContext) -> dict[str, Any]:
        # The row as it is now (done, failed, cancelled); URLs from api.public_base_url.
        current = await self.service.get_job(job.id)
        found = await api.track_object(self.config.api.public_base_url.rstrip("/"), context,
                                       current)
        return found.model_dump(mode="json")
