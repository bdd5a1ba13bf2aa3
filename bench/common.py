"""Shared pieces of the benchmarks: a throw-away service on a temp SQLite file."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

from bot.config import Config, LimitsConfig, RateLimit
from bot.core.db import Database
from bot.core.models import Actor, Destination, Job, MusicRequest, Track
from bot.core.service import MusicService

MEMBER = Actor("console", "@dm", "bench")


class TimingFrontend:
    """Records when each job's track was handed over."""

    platform = "console"

    def __init__(self) -> None:
        self.delivered_at: dict[int, float] = {}
        self.delivered = asyncio.Event()

    async def notify(self, event: object) -> None:
        return None

    async def deliver(self, job: Job, track: Track) -> None:
        self.delivered_at[job.id] = time.perf_counter()
        self.delivered.set()


def bench_config(folder: Path, model: str, max_batch: int) -> Config:
    base = Config()
    catalogue = {**base.models.catalogue, model: model}
    return dataclasses.replace(
        base,
        database=str(folder / "bench.sqlite3"),
        data_dir=str(folder / "data"),
        models=dataclasses.replace(base.models, default=model, catalogue=catalogue),
        generation=dataclasses.replace(base.generation, max_batch=max_batch, device="cpu"),
        limits=LimitsConfig(min_duration_s=0.1, max_duration_s=60.0, max_queued_per_user=10_000,
                            max_queue=10_000, rate_limit=RateLimit(count=100_000, window_s=60)),
        economy=dataclasses.replace(base.economy, starting_balance=1_000_000),
    )


async def open_service(config: Config, frontend: TimingFrontend) -> MusicService:
    db = await Database(config.database_path).open()
    service = MusicService(config, db)
    service.register_frontend(frontend)
    await service.start()
    return service


async def run_until_idle(service: MusicService, engines: dict[str, Any], config: Config) -> int:
    """Render every queued job with a worker, then deliver every track (``musicbot run``'s
    two stages, one after the other)."""
    from generation.worker import Worker

    ended = await Worker(service.settlement, engines, config).run_until_idle()
    await service.delivery.deliver_due()
    return ended


async def request(service: MusicService, model: str, prompt: str, seconds: float, key: str) -> Job:
    destination = Destination("console", MEMBER.community, "bench", MEMBER.user)
    music = MusicRequest(prompt=prompt, duration=seconds, model=model, seed=len(key))
    return (await service.request_music(MEMBER, music, destination, key)).job


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
