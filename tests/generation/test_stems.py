"""Stems with Demucs: the real HTDemucs architecture and demucs' own apply_model.

Weights cannot be downloaded here, so the separator is ``debug``: a random-initialised
HTDemucs built in-process. Its stems are NOISE — these tests check what a member gets (four
files of the track's length, the charge, the refund, the cancel), never what they sound like.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.config import Config
from bot.core.models import Destination, EventKind, JobKind, JobState
from bot.core.service import MusicService
from bot.core.stems import STEM_NAMES
from generation.audio import Audio, encode, load_track
from generation.engine import Engine
from generation.stems import Separator, StemsLane, make_stems
from tests.generation.conftest import MEMBER, BotWorker, RecordingFrontend, queue

RATE = 32_000
SECONDS = 3.0


def synthetic_mix(seconds: float = SECONDS, rate: int = RATE) -> Audio:
    """A sine bass (55 Hz) plus a noise drum track (a burst every half second), mono."""
    t = np.arange(int(seconds * rate)) / rate
    bass = 0.3 * np.sin(2 * np.pi * 55 * t)
    hits = (t % 0.5) < 0.05
    drums = 0.4 * np.random.default_rng(1).standard_normal(t.size) * hits
    return Audio((bass + drums).astype(np.float32)[None], rate)


@pytest.fixture
def config(config: Config) -> Config:
    """The generation tests' config with the random-initialised stems model."""
    return dataclasses.replace(config, models=dataclasses.replace(config.models, stems="debug"))


@pytest.fixture(scope="module")
def separator() -> Separator:
    return Separator.load("debug")


def test_a_synthetic_mix_gives_four_files_of_the_tracks_length(
    separator: Separator, config: Config
) -> None:
    mix = synthetic_mix()

    stems = separator.separate(mix)
    made = make_stems(stems, 1, "mp3", 10 * 1024 * 1024, config, noise=separator.noise)

    assert list(stems) == list(STEM_NAMES)
    assert made.noise  # random weights: the stems are noise, not drums and bass
    assert made.stems is not None and set(made.stems) == set(STEM_NAMES)
    for path in made.stems.values():
        decoded = load_track(path)
        assert decoded.sample_rate == RATE and decoded.channels == 1
        assert decoded.duration_s == pytest.approx(SECONDS, abs=0.06)  # mp3 frame padding
    with zipfile.ZipFile(made.path) as archive:
        assert sorted(archive.namelist()) == sorted(f"job1-{s}.mp3" for s in STEM_NAMES)
    assert made.size_bytes <= 10 * 1024 * 1024


def test_stems_fit_a_small_upload_limit_together(separator: Separator, config: Config) -> None:
    mix = synthetic_mix()
    whole, _ = encode(mix, "mp3", 10 * 1024 * 1024, config.audio.bitrate_kbps)
    limit = 2 * len(whole)  # four stems at the track's bitrate would not fit in one zip

    made = make_stems(separator.separate(mix), 2, "mp3", limit, config)

    assert made.size_bytes <= limit


def test_stop_between_segments(separator: Separator) -> None:
    from generation.errors import GenerationStopped

    with pytest.raises(GenerationStopped):
        separator.separate(synthetic_mix(), should_stop=lambda: True)


# --------------------------------------------------------------------------- on the worker


class GatedSeparator(Separator):
    """The debug separator, held at its start until the test lets it go (or made to fail):
    lets a test act while a stems job is running, without timing."""

    def __init__(self, base: Separator, fail: bool = False) -> None:
        super().__init__(base.model, base.name, base.device)
        self.started = threading.Event()
        self.proceed = threading.Event()
        self.fail = fail

    def separate(self, audio: Audio, **kwargs: Any) -> dict[str, Audio]:
        self.started.set()
        self.proceed.wait(timeout=60)
        if self.fail:
            raise RuntimeError("forced failure")
        return super().separate(audio, **kwargs)


def stems_worker(service: MusicService, engine: Engine, config: Config,
                 separator: Separator) -> BotWorker:
    worker = BotWorker(service, {"debug": engine}, config)
    worker.stems = StemsLane(config, separator)
    return worker


async def made_track(service: MusicService, worker: BotWorker) -> int:
    job = await queue(service, duration=2.0)
    await worker.run_until_idle()
    assert (await service.get_job(job.id)).state is JobState.DONE
    return job.id


async def ask(service: MusicService, job_id: int, key: str) -> Any:
    dest = Destination("console", MEMBER.community, "chan", MEMBER.user)
    return await service.stems(MEMBER, job_id, dest, key)


async def test_a_stems_job_runs_in_its_own_lane_and_is_delivered(
    service: MusicService, engine: Engine, config: Config, frontend: RecordingFrontend,
    separator: Separator,
) -> None:
    worker = stems_worker(service, engine, config, separator)
    source = await made_track(service, worker)
    before = await service.balance(MEMBER)
    price = await service.stems_price(MEMBER, source)

    receipt = await ask(service, source, "stems-1")
    await worker.run_until_idle()
    await service.drain_events()

    job = await service.get_job(receipt.job.id)
    assert job.kind == JobKind.STEMS and job.state is JobState.DONE
    delivered = frontend.delivered[job.id]
    assert delivered.format == "zip" and delivered.noise
    assert delivered.stems is not None and set(delivered.stems) == set(STEM_NAMES)
    assert delivered.duration_s == pytest.approx(2.0, abs=0.06)
    assert await service.balance(MEMBER) == before - price
    assert EventKind.PROGRESS in frontend.kinds(job.id)


async def test_a_deleted_source_fails_and_refunds_once(
    service: MusicService, engine: Engine, config: Config, frontend: RecordingFrontend,
    separator: Separator,
) -> None:
    worker = stems_worker(service, engine, config, separator)
    source = await made_track(service, worker)
    before = await service.balance(MEMBER)
    receipt = await ask(service, source, "stems-2")
    Path((await service.get_job(source)).track_path or "").unlink()  # the retention sweep

    await worker.run_until_idle()
    await service.drain_events()

    job = await service.get_job(receipt.job.id)
    assert job.state is JobState.FAILED and job.refunded == receipt.price
    assert await service.balance(MEMBER) == before
    failed = [e for e in frontend.events if e.job.id == job.id and e.kind is EventKind.FAILED]
    assert len(failed) == 1 and "no longer stored" in failed[0].message


async def test_a_crashing_separation_fails_and_refunds_once(
    service: MusicService, engine: Engine, config: Config, separator: Separator,
) -> None:
    gated = GatedSeparator(separator, fail=True)
    gated.proceed.set()
    worker = stems_worker(service, engine, config, gated)
    source = await made_track(service, worker)
    before = await service.balance(MEMBER)
    receipt = await ask(service, source, "stems-3")

    await worker.run_until_idle()

    job = await service.get_job(receipt.job.id)
    assert job.state is JobState.FAILED and job.error == "the stems model hit an internal error"
    assert await service.balance(MEMBER) == before


async def test_cancel_while_separating_refunds(
    service: MusicService, engine: Engine, config: Config, frontend: RecordingFrontend,
    separator: Separator,
) -> None:
    gated = GatedSeparator(separator)
    worker = stems_worker(service, engine, config, gated)
    source = await made_track(service, worker)
    before = await service.balance(MEMBER)
    receipt = await ask(service, source, "stems-4")

    running = asyncio.create_task(worker.run_until_idle())
    await asyncio.to_thread(gated.started.wait, 60)
    await service.cancel(MEMBER, receipt.job.id)
    gated.proceed.set()
    await running
    await service.drain_events()

    job = await service.get_job(receipt.job.id)
    assert job.state is JobState.CANCELLED
    assert await service.balance(MEMBER) == before
    assert EventKind.CANCELLED in frontend.kinds(job.id)


async def test_music_runs_while_a_stems_job_holds_its_lane(
    service: MusicService, engine: Engine, config: Config, separator: Separator,
) -> None:
    gated = GatedSeparator(separator)
    worker = stems_worker(service, engine, config, gated)
    source = await made_track(service, worker)
    await ask(service, source, "stems-5")

    running = asyncio.create_task(worker.run_until_idle())
    await asyncio.to_thread(gated.started.wait, 60)
    music = await queue(service, duration=1.0)
    # The stems job is still held at its start; the music job finishes regardless.
    async with asyncio.timeout(300):  # a guard against hanging, not a timing assertion
        while (await service.get_job(music.id)).state in (JobState.QUEUED, JobState.RUNNING):
            await asyncio.sleep(0.05)
    assert not gated.proceed.is_set()
    gated.proceed.set()
    await running
