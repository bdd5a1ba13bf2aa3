"""Fixtures for the track pages: a real MusicService on a SQLite file, tracks encoded by the
real audio code (ffmpeg), and the real ASGI app served by uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn

from bot.config import Config
from bot.core.db import Database
from bot.core.models import Job
from bot.core.service import MusicService
from bot.platforms.web.context import WebContext
from bot.platforms.web.server import create_app
from generation.audio import Audio, make_track
from tests.core.conftest import make_config, member, music, order

MakeTrack = Callable[..., Awaitable[Job]]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
async def service(config: Config) -> AsyncIterator[MusicService]:
    db = await Database(config.database_path).open()
    service = MusicService(config, db)
    await service.start()
    yield service
    await service.drain_events()
    await db.close()


def tone(seconds: float, rate: int = 32_000) -> Audio:
    """A rising tone with a swell: a waveform with visible shape, as real audio."""
    t = np.arange(int(seconds * rate)) / rate
    swell = 0.2 + 0.7 * np.sin(np.pi * t / seconds) ** 2
    return Audio((swell * np.sin(2 * np.pi * (220 + 110 * t) * t))[None, :].astype(np.float32),
                 rate)


@pytest.fixture
def made(service: MusicService, config: Config) -> MakeTrack:
    """``await made(prompt=..., user=..., seconds=..., share=True)``: a rendered track, charged
    and stored through the core's normal path, encoded by ``generation.audio``."""

    async def make(prompt: str = "lofi beat", user: str = "alice", seconds: float = 3.0,
                   share: bool = True, noise: bool = False, **params: Any) -> Job:
        actor = member(user)
        receipt = await order(service, actor, music(prompt, duration=seconds, **params))
        [job] = await service.settlement.claim(1)
        assert job.id == receipt.job.id
        track = await asyncio.to_thread(make_track, tone(seconds), job.id, job.params.format,
                                        50 * 1024 * 1024, config, noise=noise)
        await service.settlement.rendered(job, track)
        if share:
            return await service.sharing.share(actor, job.id)
        return await service.get_job(job.id)

    return make


async def serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    """Start uvicorn on a free port of 127.0.0.1; returns (server, task, base URL)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises why it could not start
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, f"http://127.0.0.1:{port}"


@pytest.fixture
async def base_url(service: MusicService, config: Config) -> AsyncIterator[str]:
    """The real server (``create_app`` as ``musicbot`` builds it) on a free local port."""
    server, task, url = await serve(create_app(WebContext(service=service, config=config)))
    yield url
    server.should_exit = True
    await task


def with_api(config: Config, **fields: Any) -> Config:
    return dataclasses.replace(config, api=dataclasses.replace(config.api, **fields))
