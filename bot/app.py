"""Composition root: builds the store, service, engines, worker and frontends; starts/stops them.

Start order matters: frontends are registered before recovery runs so members hear about
jobs a crash interrupted; models load before the worker starts (no cold starts). Background
tasks of one process: the lease heartbeat (always), recovery of dead processes' jobs (when
this process renders), and the delivery stage (drains rendered tracks to this process's
frontends). On stop the worker first hands its running jobs back to the queue, deliveries
under way finish, notifications drain, then the frontends disconnect and the database closes.
The ops endpoint (``/healthz``, ``/metrics``; ``ops.http_port``, off when 0) listens from the
database's opening, so a health check sees a bot still loading its models as not ready.

Roles (docs/scaling.md): ``run`` is all of the above; ``worker`` loads models and renders but
starts no frontend and no delivery; ``frontends`` loads no model (torch is never imported),
and runs the frontends, delivery, recovery and the relay that shows other processes' job
changes (:mod:`bot.core.relay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bot.config import Config
from bot.core.db import Database
from bot.core.errors import MusicBotError
from bot.core.ports import Frontend
from bot.core.recovery import RecoveryReport
from bot.core.relay import EventRelay
from bot.core.service import MusicService
from bot.core.storage import retention_cutoff
from bot.metrics import Metrics
from bot.ops_http import Health, OpsServer, database_reachable, frontend_up

if TYPE_CHECKING:  # torch loads with generation: only the commands that render import it
    from generation.engine import Engine
    from generation.stems import StemsLane

log = logging.getLogger(__name__)

TRACK_SWEEP_INTERVAL_S = 3600.0

Role = Literal["run", "worker", "frontends"]
"""What one process does: everything, only rendering, or only chat and delivery."""


class RunnableFrontend(Frontend, Protocol):
    """A frontend with a connection to start and stop (Discord, Slack)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class App:
    """The whole bot in one process. ``async with App(config) as app:`` or start()/stop()."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.db = Database(config.database_path)
        self.service = MusicService(config, self.db)
        self.frontends: list[Any] = []
        self.engines: dict[str, Any] = {}
        self.worker: Any = None
        self.recovery_report: RecoveryReport | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics = Metrics()
        self.service.notifier.listeners.append(self.metrics.on_event)
        self.metrics.delivery = self.service.delivery
        self.ops = OpsServer(self.health, self.metrics, self.db)
        self._renders = False
        self.role: Role = "run"
        self.relay: EventRelay | None = None

    @staticmethod
    @contextlib.asynccontextmanager
    async def store(config: Config) -> AsyncIterator[MusicService]:
        """The use cases over an open (migrated) database, without models, worker or frontends.

        For commands that only read or move tokens (``musicbot admin``): nothing renders,
        nothing is recovered, and the database closes on leaving the block.
        """
        async with open_database(config) as db:
            yield MusicService(config, db)

    def add_frontend(self, frontend: Frontend) -> None:
        """Register a frontend; if it has start()/stop(), the app runs them."""
        self.frontends.append(frontend)
        self.service.register_frontend(frontend)

    async def start(
        self, *, worker: bool = True, render_for: frozenset[str] | None = None,
        role: Role = "run",
    ) -> None:
        """Open the database, load models, start recovery, worker, delivery and frontends.

        ``worker=False`` renders nothing (and so recovers nothing); ``render_for`` limits the
        worker to jobs of those platforms (the local console renders only its own).
        ``role``: ``run`` (everything), ``worker`` (models and rendering; no delivery) or
        ``frontends`` (chat, delivery and recovery; no models, torch is never imported).
        """
        self.role = role
        if role == "frontends":
            await self._start_frontends_role()
            return
        from generation.worker import Worker

        await self.db.open()
        try:
            await self._start_ops()
            await self.service.start()
            for frontend in self.frontends:
                if hasattr(frontend, "listen"):  # the HTTP API: 503 while models load
                    await frontend.listen()
            self._spawn(self.service.leases.run_forever(), "leases")
            self._spawn(self._sweep_tracks_periodically(), "retention")
            self.engines = await asyncio.to_thread(load_engines, self.config)
            self.service.available_models = frozenset(self.engines)
            stems = stems_lane(self.config)
            if stems is not None:
                self.service.stems_unavailable = lambda: stems.unavailable
            self.worker = Worker(self.service.settlement, self.engines, self.config,
                                 platforms=render_for, stems=stems)
            self.metrics.worker = self.worker
            self._renders = worker
            if worker:
                self.recovery_report = await self.service.recovery.recover()
                self._spawn(self._recover_periodically(), "recovery")
                await self.worker.warm_up()  # no cold start for the first member
                await self.worker.start()
            if role == "run":
                await self._start_frontends()
        except BaseException:
            await self.stop()
            raise

    async def _start_frontends_role(self) -> None:
        """``musicbot frontends``: chat, delivery, relay and recovery; nothing renders here."""
        await self.db.open()
        try:
            await self._start_ops()
            await self.service.start()
            self._spawn(self.service.leases.run_forever(), "leases")
            self._spawn(self._sweep_tracks_periodically(), "retention")
            self.recovery_report = await self.service.recovery.recover()
            self._spawn(self._recover_periodically(), "recovery")
            await self._start_frontends()
        except BaseException:
            await self.stop()
            raise

    async def _start_frontends(self) -> None:
        """Start the frontends, the delivery stage and the relay of other processes' changes."""
        for frontend in self.frontends:
            if hasattr(frontend, "start"):
                await frontend.start()
        self._spawn(self.service.delivery.run_forever(), "delivery")
        if self.frontends:
            self.relay = EventRelay(self.db, self.service.notifier, owner=self.service.owner,
                                    interval_s=progress_poll_s(self.config, self.frontends))
            self._spawn(self.relay.run_forever(), "relay")

    async def stop(self) -> None:
        """Stop cleanly: running jobs go back to the queue, nothing is lost or charged twice."""
        await self.ops.stop()
        if self.worker is not None:
            await self.worker.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.db.is_open and self._delivers:
            await self.service.delivery.stop()
        await self.service.drain_events()
        for frontend in reversed(self.frontends):
            if hasattr(frontend, "stop"):
                try:
                    await frontend.stop()
                except Exception:
                    log.exception("stopping the %s frontend failed", frontend.platform)
        await self.service.apikeys.close()
        await self.db.close()

    async def health(self) -> Health:
        """What ``/healthz`` shows: ``ok`` is false when any part this process runs is down."""
        frontends = {f.platform: frontend_up(f) for f in self.frontends}
        report: Health = {
            "database": await database_reachable(self.db),
            "worker": self.worker.running if self._renders else None,  # None: not ours to run
            "models": sorted(self.engines),
            "frontends": frontends,
        }
        report["ok"] = bool(report["database"] and report["worker"] is not False
                            and (report["models"] or self.role == "frontends")
                            and all(frontends.values()))
        return report

    async def _start_ops(self) -> None:
        """Serve /healthz and /metrics if configured. A taken port is logged, not fatal: the
        members' music matters more than the monitoring port (a console beside the service)."""
        ops = self.config.ops
        if not ops.http_port:
            return
        try:
            await self.ops.start(ops.http_host, ops.http_port)
        except OSError as exc:
            log.error("ops endpoint: cannot listen on %s:%d (%s); running without it",
                      ops.http_host, ops.http_port, exc.strerror or exc)

    @property
    def _delivers(self) -> bool:
        return self.role != "worker"

    def _spawn(self, work: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(work, name=name))

    async def _recover_periodically(self) -> None:
        await asyncio.sleep(self.config.generation.lease_s / 2)  # start-up pass already ran
        await self.service.recovery.run_forever()

    async def _sweep_tracks_periodically(self) -> None:
        """Delete tracks and stored audio prompts past ``audio.retention_days`` (tracks in the
        store and this process's local folder or cache) now and then every hour."""
        from bot.media.clips import sweep_clips

        while True:
            try:
                cutoff = retention_cutoff(self.config)
                deleted = 0 if cutoff is None else await self.service.tracks.sweep(cutoff)
                deleted += await asyncio.to_thread(sweep_clips, self.config)
                if deleted:
                    log.info("retention: deleted %d old track files", deleted)
            except (OSError, MusicBotError):
                log.warning("retention sweep failed", exc_info=True)
            await asyncio.sleep(TRACK_SWEEP_INTERVAL_S)

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@contextlib.asynccontextmanager
async def open_database(config: Config, *, migrate: bool = True) -> AsyncIterator[Database]:
    """The database of ``config``, open for the block; ``migrate=False`` leaves the schema as
    it is (``musicbot db upgrade`` and ``doctor`` look at it before changing anything)."""
    db = Database(config.database_path)
    await db.open(migrate=migrate)
    try:
        yield db
    finally:
        await db.close()


def load_engine(config: Config, key: str) -> Engine:
    """Load catalogue model ``key`` on the configured device (slow, blocking)."""
    from generation.engine import Engine

    return Engine.load(config.model_source(key), config.generation.device,
                       extend_stride_s=config.generation.extend_stride_s)


def stems_lane(config: Config) -> StemsLane | None:
    """The worker's stems lane for ``models.stems`` (its model loads at the first job), or
    None when stems are turned off."""
    if not config.models.stems:
        return None
    from generation.engine import resolve_device
    from generation.stems import StemsLane

    return StemsLane(config, device=resolve_device(config.generation.device))


def load_engines(config: Config) -> dict[str, Engine]:
    """Load the default model and ``models.preload`` once, at start-up (slow, blocking)."""
    engines: dict[str, Engine] = {}
    for key in dict.fromkeys([config.models.default, *config.models.preload]):
        engine = load_engine(config, key)
        log.info("model %s (%s) ready on %s in %.1f s%s", key, engine.source, engine.device,
                 engine.load_s, " — random weights: output is noise" if engine.noise else "")
        engines[key] = engine
    return engines


def chat_frontends(config: Config, service: MusicService) -> list[Any]:
    """The chat frontends whose credentials are present in the environment."""
    frontends: list[Any] = []
    secrets = config.secrets
    if config.discord.enabled and secrets.discord_token:
        from bot.platforms.discord_bot import DiscordFrontend

        frontends.append(DiscordFrontend(config, service))
    if config.slack.enabled and secrets.slack_bot_token and _slack_mode_ready(config):
        from bot.platforms.slack_bot import SlackFrontend

        frontends.append(SlackFrontend(config, service))
    return frontends


def api_frontend(config: Config, service: MusicService) -> Any:
    """The HTTP API frontend (``/v1``), when ``api.enabled``; else None."""
    if not config.api.enabled:
        return None
    from bot.platforms.web.server import ApiFrontend

    return ApiFrontend(config, service)


def progress_poll_s(config: Config, frontends: list[Any]) -> float:
    """How often a frontends process reads other processes' job changes: the quickest edit
    pace of its platforms (Discord's, Slack's; others use Discord's)."""
    paces = {"discord": config.discord.progress_edit_interval_s,
             "slack": config.slack.progress_edit_interval_s}
    return float(min(paces.get(f.platform, config.discord.progress_edit_interval_s)
                     for f in frontends))


def _slack_mode_ready(config: Config) -> bool:
    if config.slack.mode == "socket":
        return config.secrets.slack_app_token is not None
    return config.secrets.slack_signing_secret is not None


def missing_chat_credentials(config: Config) -> list[str]:
    """Human explanations of why a chat frontend will not start (for run and doctor)."""
    notes = []
    secrets = config.secrets
    if config.discord.enabled and not secrets.discord_token:
        notes.append("Discord: set DISCORD_TOKEN to connect to Discord.")
    if config.slack.enabled:
        if not secrets.slack_bot_token:
            notes.append("Slack: set SLACK_BOT_TOKEN (xoxb-…) to connect to Slack.")
        elif config.slack.mode == "socket" and not secrets.slack_app_token:
            notes.append("Slack: Socket Mode needs SLACK_APP_TOKEN (xapp-…), or set "
                         "slack.mode: http with SLACK_SIGNING_SECRET.")
        elif config.slack.mode == "http" and not secrets.slack_signing_secret:
            notes.append("Slack: HTTP mode needs SLACK_SIGNING_SECRET.")
    return notes
