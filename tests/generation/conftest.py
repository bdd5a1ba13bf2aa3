"""Fixtures for the generation tests: the real debug MusicGen, a real MusicService on a
SQLite file in tmp_path, and a frontend that records what members would see."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config, LimitsConfig, RateLimit
from bot.core.db import Database
from bot.core.models import Actor, Destination, EventKind, Job, JobEvent, MusicRequest, Track
from bot.core.service import MusicService
from generation.engine import Engine
from generation.worker import Worker


class BotWorker(Worker):
    """The worker plus this process's delivery stage, the way ``musicbot run`` runs them:
    ``run_until_idle`` renders every queued job, then delivers every rendered track."""

    def __init__(self, service: MusicService, engines: Any, config: Config) -> None:
        super().__init__(service.settlement, engines, config)
        self.delivery = service.delivery

    async def run_until_idle(self) -> int:
        ended = await super().run_until_idle()
        await self.delivery.deliver_due()
        return ended


MAX_DURATION = 4.0
"""Window of the test model: anything longer exercises audiocraft's sliding window."""


@pytest.fixture(scope="session")
def shared_engine() -> Engine:
    return Engine.load("debug", "cpu", max_duration=MAX_DURATION, extend_stride_s=2.0)


@pytest.fixture
def engine(shared_engine: Engine) -> Iterator[Engine]:
    shared_engine.fault_hook = None
    yield shared_engine
    shared_engine.fault_hook = None


@pytest.fixture
def config(tmp_path: Path) -> Config:
    base = Config()
    return dataclasses.replace(
        base,
        database=str(tmp_path / "bot.sqlite3"),
        data_dir=str(tmp_path / "data"),
        models=dataclasses.replace(base.models, default="debug"),
        generation=dataclasses.replace(base.generation, progress_interval_s=0.02,
                                       max_batch=4, device="cpu"),
        limits=LimitsConfig(max_duration_s=120.0, max_queued_per_user=50, max_queue=100,
                            rate_limit=RateLimit(count=100, window_s=60)),
        economy=dataclasses.replace(base.economy, starting_balance=10_000),
    )


class RecordingFrontend:
    """A console-like frontend that keeps every event and delivered track."""

    platform = "console"

    def __init__(self) -> None:
        self.events: list[JobEvent] = []
        self.delivered: dict[int, Track] = {}
        self.progress_seen = asyncio.Event()

    async def notify(self, event: JobEvent) -> None:
        self.events.append(event)
        if event.kind is EventKind.PROGRESS:
            self.progress_seen.set()

    async def deliver(self, job: Job, track: Track) -> None:
        self.delivered[job.id] = track

    def kinds(self, job_id: int) -> list[EventKind]:
        return [e.kind for e in self.events if e.job.id == job_id]


@pytest.fixture
def frontend() -> RecordingFrontend:
    return RecordingFrontend()


@pytest.fixture
async def service(config: Config, frontend: RecordingFrontend) -> AsyncIterator[MusicService]:
    db = await Database(config.database_path).open()
    svc = MusicService(config, db)
    svc.register_frontend(frontend)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.drain_events()
        await db.close()


MEMBER = Actor("console", "@dm", "alice")
ADMIN = Actor("console", "@dm", "root", is_admin=True)
_counter = iter(range(1, 1_000_000))


async def queue(
    service: MusicService, prompt: str = "lofi beat", *, duration: float = 1.0, seed: int = 7,
    actor: Actor = MEMBER, upload_limit: int = 10 * 1024 * 1024, **extra: object,
) -> Job:
    """Request a track as a member would; returns the queued job."""
    request = MusicRequest(prompt=prompt, duration=duration, model="debug", seed=seed, **extra)
    destination = Destination("console", actor.community, "chan", actor.user,
                              upload_limit=upload_limit)
    receipt = await service.request_music(actor, request, destination, f"k{next(_counter)}")
    return receipt.job
