"""What an operator monitoring the bot sees: /healthz, /metrics and one log line per job change.

A real App (debug MusicGen on the CPU, SQLite file, worker, delivery stage) with the console
frontend, its ops endpoint on a free loopback port, read with aiohttp's client.
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import App
from bot.config import Config, validate
from bot.core.errors import ConfigError
from bot.core.events import Notifier, job_log_line
from bot.core.models import (
    AccountKey,
    Destination,
    EventKind,
    GenerationParams,
    Job,
    JobEvent,
    JobState,
)
from bot.platforms.console import ConsoleFrontend
from tests.core.conftest import make_config

PROMPT = "whispering harpsichord secret"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(tmp_path: Path, port: int) -> Config:
    return make_config(tmp_path, models={"default": "debug"}, generation={"device": "cpu"},
                       ops={"http_port": port})


async def _start(tmp_path: Path, *, worker: bool = True) -> tuple[App, ConsoleFrontend]:
    app = App(_config(tmp_path, _free_port()))
    console = ConsoleFrontend(app.service, out=io.StringIO())
    app.add_frontend(console)
    await app.start(worker=worker)
    return app, console


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[tuple[App, ConsoleFrontend]]:
    app, console = await _start(tmp_path)
    try:
        yield app, console
    finally:
        await app.stop()


async def _get(app: App, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{app.ops.port}{path}"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


async def _health(app: App) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{app.ops.port}/healthz"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


async def _samples(app: App) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = await _get(app, "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_a_healthy_bot_says_so(bot: tuple[App, ConsoleFrontend]) -> None:
    app, _console = bot
    status, report = await _health(app)
    assert status == 200
    assert report == {"ok": True, "database": True, "worker": True, "models": ["debug"],
                      "frontends": {"console": True}}


async def test_a_track_shows_in_the_metrics_and_the_job_log(
    bot: tuple[App, ConsoleFrontend], caplog: pytest.LogCaptureFixture,
) -> None:
    app, console = bot
    caplog.set_level(logging.INFO, logger="bot.jobs")
    done = asyncio.Event()  # the console has the file a moment before the job is done
    app.service.notifier.listeners.append(
        lambda event: done.set() if event.kind is EventKind.DONE else None)
    result = await console.execute(f'/music prompt:"{PROMPT}" duration:2')
    assert result.ok and result.job_id is not None
    assert await console.wait_for(result.job_id, timeout=300)
    await asyncio.wait_for(done.wait(), timeout=300)

    samples = await _samples(app)
    assert samples[("musicbot_jobs_queued_total", ())] == 1
    assert samples[("musicbot_jobs_ended_total", (("state", "done"),))] == 1
    assert samples[("musicbot_job_latency_seconds_count", ())] == 1
    assert samples[("musicbot_audio_seconds_total", ())] >= 2
    assert samples[("musicbot_jobs", (("state", "queued"),))] == 0
    assert samples[("musicbot_worker_busy_slots", ())] == 0
    assert samples[("musicbot_delivery_retries_total", ())] == 0

    lines = [r.getMessage() for r in caplog.records if r.name == "bot.jobs"]
    mine = [line for line in lines if line.startswith(f"job={result.job_id} ")]
    states = [line.split()[1] for line in mine]
    assert states == ["state=queued", "state=started", "state=done"]
    assert "platform=console" in mine[-1] and "duration=2" in mine[-1]
    assert "wait_s=" in mine[-1] and "total_s=" in mine[-1]
    assert not any(PROMPT in r.getMessage() for r in caplog.records)  # prompts stay private


async def test_queue_depth_and_refunds_are_counted(tmp_path: Path) -> None:
    app, console = await _start(tmp_path, worker=False)  # nothing renders: the job waits
    try:
        status, report = await _health(app)
        assert status == 200 and report["worker"] is None  # not this process's job to render
        first = await console.execute('/music prompt:"drums" duration:2')
        await console.execute('/music prompt:"bass" duration:2')
        samples = await _samples(app)
        assert samples[("musicbot_jobs", (("state", "queued"),))] == 2

        assert (await console.execute(f"/cancel {first.job_id}")).ok
        await app.service.drain_events()
        samples = await _samples(app)
        assert samples[("musicbot_jobs", (("state", "queued"),))] == 1
        assert samples[("musicbot_refunds_total", (("reason", "cancelled"),))] == 1
        assert samples[("musicbot_refunded_tokens_total", (("reason", "cancelled"),))] > 0
        assert samples[("musicbot_jobs_ended_total", (("state", "cancelled"),))] == 1
    finally:
        await app.stop()


async def test_a_stopped_worker_makes_the_bot_unhealthy(bot: tuple[App, ConsoleFrontend]) -> None:
    app, _console = bot
    await app.worker.stop()
    status, report = await _health(app)
    assert status == 503
    assert report["ok"] is False and report["worker"] is False and report["database"] is True


async def test_a_closed_database_makes_the_bot_unhealthy(bot: tuple[App, ConsoleFrontend]) -> None:
    app, _console = bot
    await app.db.close()
    status, report = await _health(app)
    assert status == 503
    assert report["ok"] is False and report["database"] is False
    status, _text = await _get(app, "/metrics")
    assert status == 200  # a scrape still answers: the scraper sees the bot is up, not the db


async def test_the_endpoint_is_off_unless_a_port_is_set(tmp_path: Path) -> None:
    app = App(make_config(tmp_path, models={"default": "debug"}, generation={"device": "cpu"}))
    await app.start(worker=False)
    try:
        assert app.ops.port is None
    finally:
        await app.stop()


def test_a_bad_port_names_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        validate({"ops": {"http_port": 70000}})
    assert "ops.http_port" in str(caught.value)


def _job(model: str) -> Job:
    return Job(id=7, account=AccountKey("discord", "g", "u"),
               params=GenerationParams(PROMPT, 10.0, model, 1), state=JobState.QUEUED, price=20,
               idempotency_key="k", destination=Destination("discord", "g", "c", "u",
                                                             interaction_token="tok-SECRET"),
               attempts=0, max_attempts=2, error=None, cancel_requested=False, created_at=100.0,
               started_at=None, finished_at=None, track_path=None)


def test_the_job_line_stays_one_token_per_field_and_private() -> None:
    event = JobEvent(EventKind.FAILED, _job("/models/my model"), refunded=20,
                     message=f"could not make {PROMPT}")
    line = job_log_line(event, now=130.0)
    assert line == ('job=7 state=failed platform=discord model="/models/my model" duration=10 '
                    "attempt=0 total_s=30.0 refunded=20")
    assert PROMPT not in line and "SECRET" not in line


async def test_a_broken_listener_never_stops_the_event(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[EventKind] = []

    def broken(_event: JobEvent) -> None:
        raise RuntimeError("metrics bug")

    notifier = Notifier([broken, lambda event: seen.append(event.kind)])
    notifier.record(JobEvent(EventKind.QUEUED, _job("small")))
    assert seen == [EventKind.QUEUED]
    assert "listener failed" in caplog.text
