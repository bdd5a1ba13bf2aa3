"""The worker against the real MusicService, a real SQLite file and the debug MusicGen."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from audiocraft.models import MusicGen
from audiocraft.models.builders import get_debug_compression_model
from audiocraft.models.lm import LMModel
from audiocraft.modules.codebooks_patterns import DelayedPatternProvider
from audiocraft.modules.conditioners import ConditionFuser, ConditioningProvider, LUTConditioner
from pydub import AudioSegment

from bot.config import Config
from bot.core.db import Database
from bot.core.models import Destination, EventKind, JobState, LedgerKind, MusicRequest
from bot.core.service import MusicService
from generation.engine import Engine, GenerationRequest
from generation.worker import OneAtATime, Worker
from tests.generation.conftest import ADMIN, MEMBER, BotWorker, RecordingFrontend, queue


def record_batches(engine: Engine) -> list[int]:
    """Sizes of the batches the engine is asked to generate (via its fault hook)."""
    sizes: list[int] = []
    engine.fault_hook = lambda batch: sizes.append(len(batch))
    return sizes


async def refunds(service: MusicService, job_id: int) -> int:
    entries = await service.ledger(ADMIN, MEMBER.user, limit=200)
    return sum(1 for e in entries if e.kind is LedgerKind.REFUND and e.job_id == job_id)


async def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_queued_jobs_decode_together_and_are_delivered_as_mp3(
    service: MusicService, engine: Engine, config: Config, frontend: RecordingFrontend
) -> None:
    jobs = [await queue(service, f"song {i}", seed=i, duration=2) for i in range(3)]
    balance = await service.balance(MEMBER)
    worker = BotWorker(service, {"debug": engine}, config)
    assert await worker.run_until_idle() == 3
    assert worker._batchers["debug"].mean_occupancy > 2.5  # the three shared each step
    for job in jobs:
        assert (await service.get_job(job.id)).state is JobState.DONE
        track = frontend.delivered[job.id]
        assert track.noise
        assert AudioSegment.from_file(track.path).duration_seconds == pytest.approx(2, abs=0.1)
        assert EventKind.PROGRESS in frontend.kinds(job.id)
    assert await service.balance(MEMBER) == balance  # charged once, at request time


async def test_jobs_of_different_lengths_and_settings_share_the_batch(
    service: MusicService, engine: Engine, config: Config, frontend: RecordingFrontend
) -> None:
    jobs = [await queue(service, "a", duration=1, seed=1),
            await queue(service, "b", duration=3, seed=2, temperature=0.7),
            await queue(service, "c", duration=2, seed=3, top_k=50, cfg=5)]
    worker = BotWorker(service, {"debug": engine}, config)
    await worker.run_until_idle()
    assert worker._batchers["debug"].mean_occupancy > 1.5
    for job, seconds in zip(jobs, (1, 3, 2), strict=True):
        track = frontend.delivered[job.id]
        assert AudioSegment.from_file(track.path).duration_seconds == pytest.approx(
            seconds, abs=0.1)


async def test_same_seed_gives_the_same_file_alone_or_in_a_batch(
    service: MusicService, engine: Engine, config: Config, frontend: RecordingFrontend
) -> None:
    worker = BotWorker(service, {"debug": engine}, config)
    alone = await queue(service, "drums", seed=11)
    await worker.run_until_idle()
    others = [await queue(service, "bass", seed=1), await queue(service, "drums", seed=11)]
    await worker.run_until_idle()
    first = Path(frontend.delivered[alone.id].path).read_bytes()
    assert first == Path(frontend.delivered[others[1].id].path).read_bytes()


async def test_cancel_mid_generation_refunds_it_and_requeues_its_batch_mate(
    service: MusicService, engine: Engine, config: Config, frontend: RecordingFrontend
) -> None:
    long_a = await queue(service, "epic", seed=1, duration=90)
    long_b = await queue(service, "epic too", seed=2, duration=90)
    balance = await service.balance(MEMBER)
    worker = BotWorker(service, {"debug": engine}, config)
    await worker.start()
    await asyncio.wait_for(frontend.progress_seen.wait(), 20)
    await service.cancel(MEMBER, long_a.id)
    await wait_for(lambda: long_a.id in {e.job.id for e in frontend.events
                                         if e.kind is EventKind.CANCELLED})
    await worker.stop()
    assert (await service.get_job(long_a.id)).state is JobState.CANCELLED
    assert await refunds(service, long_a.id) == 1
    assert await service.balance(MEMBER) == balance + long_a.price
    mate = await service.get_job(long_b.id)
    assert mate.state in (JobState.QUEUED, JobState.RENDERED, JobState.DONE)
    assert await refunds(service, long_b.id) == 0


async def test_model_crash_fails_the_job_and_refunds_exactly_once(
    service: MusicService, engine: Engine, config: Config, frontend: RecordingFrontend
) -> None:
    def crash(batch: Sequence[GenerationRequest]) -> None:
        raise RuntimeError("boom")

    engine.fault_hook = crash
    job = await queue(service)
    balance = await service.balance(MEMBER)
    await BotWorker(service, {"debug": engine}, config).run_until_idle()
    failed = await service.get_job(job.id)
    assert failed.state is JobState.FAILED
    assert await refunds(service, job.id) == 1
    assert await service.balance(MEMBER) == balance + job.price
    assert "internal error" in next(e.message for e in frontend.events
                                    if e.kind is EventKind.FAILED)


async def test_out_of_memory_shrinks_the_slots_until_everything_is_delivered(
    service: MusicService, engine: Engine, config: Config, frontend: RecordingFrontend
) -> None:
    ooms = [0]

    def small_gpu(batch: Sequence[GenerationRequest]) -> None:
        if ooms[0] < 2:  # the first two jobs to start hit the memory ceiling
            ooms[0] += 1
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    engine.fault_hook = small_gpu
    jobs = [await queue(service, f"song {i}", seed=i) for i in range(4)]
    worker = BotWorker(service, {"debug": engine}, config)
    await worker.run_until_idle()
    states = [(await service.get_job(j.id)).state for j in jobs]
    assert states == [JobState.DONE] * 4
    assert worker._slot_cap["debug"] < config.generation.max_batch  # it remembers
    assert set(frontend.delivered) == {j.id for j in jobs}
    assert [await refunds(service, j.id) for j in jobs] == [0] * 4
    assert [(await service.get_job(j.id)).attempts for j in jobs] == [1] * 4


async def test_out_of_memory_with_a_single_job_fails_and_refunds(
    service: MusicService, engine: Engine, config: Config
) -> None:
    def no_memory(batch: Sequence[GenerationRequest]) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    engine.fault_hook = no_memory
    job = await queue(service)
    await BotWorker(service, {"debug": engine}, config).run_until_idle()
    assert (await service.get_job(job.id)).state is JobState.FAILED
    assert await refunds(service, job.id) == 1


async def test_event_loop_keeps_ticking_while_the_model_runs(
    service: MusicService, engine: Engine, config: Config, frontend: RecordingFrontend
) -> None:
    job = await queue(service, duration=60)
    gaps: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    await BotWorker(service, {"debug": engine}, config).run_until_idle()
    done.set()
    await beat
    assert job.id in frontend.delivered
    assert len(gaps) > 20 and max(gaps) < 0.5


async def test_stop_requeues_the_running_job_and_a_new_worker_delivers_it(
    service: MusicService, engine: Engine, config: Config, frontend: RecordingFrontend
) -> None:
    job = await queue(service, duration=30)
    worker = BotWorker(service, {"debug": engine}, config)
    await worker.start()
    await asyncio.wait_for(frontend.progress_seen.wait(), 20)
    await worker.stop()
    requeued = await service.get_job(job.id)
    assert requeued.state is JobState.QUEUED and requeued.attempts == job.attempts
    engine.fault_hook = None
    short = dataclasses.replace(config, generation=dataclasses.replace(
        config.generation, job_timeout_s=600))
    await BotWorker(service, {"debug": engine}, short).run_until_idle()
    assert (await service.get_job(job.id)).state is JobState.DONE
    assert await refunds(service, job.id) == 0


async def test_job_left_running_by_a_dead_process_is_recovered_and_delivered(
    config: Config, engine: Engine, frontend: RecordingFrontend
) -> None:
    db = await Database(config.database_path).open()
    before = MusicService(config, db, owner="another-box:4242:gone")
    job = await queue(before)
    assert [j.id for j in await before.settlement.claim(4)] == [job.id]  # then it "dies"
    await db.close()

    db = await Database(config.database_path).open()
    now = [time.time()]
    after = MusicService(config, db, clock=lambda: now[0])
    after.register_frontend(frontend)
    assert (await after.recovery.recover()).requeued == []  # another host: not before...
    now[0] += config.generation.lease_s + 1  # ...its lease ran out
    report = await after.recovery.recover()
    assert report.requeued == [job.id]
    await BotWorker(after, {"debug": engine}, config).run_until_idle()
    assert (await after.get_job(job.id)).state is JobState.DONE
    assert job.id in frontend.delivered
    await after.drain_events()
    await db.close()


async def test_timeout_fails_the_job_after_its_attempts_and_refunds_once(
    service: MusicService, engine: Engine, config: Config
) -> None:
    impatient = dataclasses.replace(config, generation=dataclasses.replace(
        config.generation, job_timeout_s=0.05))
    job = await queue(service, duration=60)
    await BotWorker(service, {"debug": engine}, impatient).run_until_idle()
    failed = await service.get_job(job.id)
    assert failed.state is JobState.FAILED and failed.attempts == failed.max_attempts
    assert "0.05 s" in (failed.error or "")
    assert await refunds(service, job.id) == 1


async def test_extend_continues_the_finished_track(
    service: MusicService, engine: Engine, config: Config, frontend: RecordingFrontend
) -> None:
    worker = BotWorker(service, {"debug": engine}, config)
    first = await queue(service, "ambient", duration=3)
    await worker.run_until_idle()
    receipt = await service.extend(MEMBER, first.id, 2, first.destination, "extend-1")
    await worker.run_until_idle()
    longer = frontend.delivered[receipt.job.id]
    assert AudioSegment.from_file(longer.path).duration_seconds == pytest.approx(5, abs=0.1)


async def test_track_too_big_for_the_upload_limit_fails_with_a_refund(
    service: MusicService, engine: Engine, config: Config, frontend: RecordingFrontend
) -> None:
    job = await queue(service, duration=30, upload_limit=30_000)
    await BotWorker(service, {"debug": engine}, config).run_until_idle()
    assert (await service.get_job(job.id)).state is JobState.FAILED
    assert await refunds(service, job.id) == 1
    failure = next(e for e in frontend.events if e.kind is EventKind.FAILED)
    assert "shorter" in failure.message


async def test_unknown_model_fails_cleanly(
    service: MusicService, engine: Engine, config: Config
) -> None:
    job = await queue(service)
    await BotWorker(service, {"small": engine}, config).run_until_idle()
    failed = await service.get_job(job.id)
    assert failed.state is JobState.FAILED and "not loaded" in (failed.error or "")
    assert await refunds(service, job.id) == 1


async def test_warm_up_gives_the_first_member_an_eta(
    service: MusicService, engine: Engine, config: Config
) -> None:
    worker = BotWorker(service, {"debug": engine}, config)
    await worker.warm_up()
    receipt = await service.request_music(
        MEMBER, MusicRequest(prompt="first of the day", duration=3, model="debug"),
        Destination("console", MEMBER.community, "chan", MEMBER.user), "first-eta")
    assert receipt.position == 1 and receipt.eta_s is not None and receipt.eta_s > 0
    await worker.run_until_idle()
    await worker.stop()


async def test_a_slow_upload_never_holds_the_model(
    service: MusicService, engine: Engine, config: Config, frontend: RecordingFrontend
) -> None:
    """Delivery is its own stage: while the first track's upload hangs, the worker renders
    the next job (before, uploads ran inside the worker and held the GPU idle)."""
    upload_may_finish = asyncio.Event()
    original = frontend.deliver

    async def hanging_upload(job: Any, track: Any) -> None:
        await upload_may_finish.wait()
        await original(job, track)

    frontend.deliver = hanging_upload  # type: ignore[method-assign]
    worker = Worker(service.settlement, {"debug": engine}, config)
    delivery = asyncio.create_task(service.delivery.run_forever())
    await worker.start()
    try:
        first = await queue(service, "first", duration=1)
        await wait_for_state(service, first.id, JobState.RENDERED)  # its upload now hangs
        second = await queue(service, "second", duration=1)
        await wait_for_state(service, second.id, JobState.RENDERED)
        assert (await service.get_job(first.id)).state is JobState.RENDERED  # still uploading
        upload_may_finish.set()
        await wait_for_state(service, first.id, JobState.DONE)
        await wait_for_state(service, second.id, JobState.DONE)
    finally:
        upload_may_finish.set()
        await worker.stop()
        delivery.cancel()
        await asyncio.gather(delivery, return_exceptions=True)
        await service.delivery.stop()


async def wait_for_state(service: MusicService, job_id: int, state: JobState) -> None:
    deadline = time.monotonic() + 60
    while (await service.get_job(job_id)).state is not state:
        assert time.monotonic() < deadline, f"job {job_id} never became {state.value}"
        await asyncio.sleep(0.02)


async def test_a_model_the_batcher_cannot_run_still_serves_members_one_at_a_time(
    service: MusicService, config: Config, frontend: RecordingFrontend,
) -> None:
    """An LM the decode loop does not implement (here rotary positions; in practice melody
    conditioning) is served by audiocraft's own generate, one job at a time, not failed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        provider = ConditioningProvider(
            {"description": LUTConditioner(n_bins=128, dim=16, output_dim=16,
                                           tokenizer="noop")}, device="cpu")
        fuser = ConditionFuser({"cross": ["description"], "prepend": [], "sum": [],
                                "input_interpolate": []})
        lm = LMModel(DelayedPatternProvider(n_q=4), provider, fuser, n_q=4, card=400, dim=16,
                     num_heads=4, custom=True, num_layers=2, cross_attention=True,
                     causal=True, positional_embedding="rope").eval()
        model = MusicGen("rope-debug", get_debug_compression_model("cpu"), lm, max_duration=30)
    rope = Engine(model, "debug", "cpu", noise=True, extend_stride_s=18.0)
    jobs = [await queue(service, f"rotary {i}", seed=i, duration=1) for i in range(2)]
    worker = BotWorker(service, {"debug": rope}, config)
    await worker.run_until_idle()
    assert isinstance(worker._batchers["debug"], OneAtATime)
    assert [(await service.get_job(j.id)).state for j in jobs] == [JobState.DONE] * 2
    assert set(frontend.delivered) == {j.id for j in jobs}
    await worker.stop()


async def test_a_batch_that_ends_together_is_finished_on_few_threads(
    service: MusicService, engine: Engine, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four tracks end in the same step; finishing them (analysis, encoding) takes one thread
    here (``finish_threads: 1``), not one each: each would take the GIL from the event loop
    that answers members."""
    import generation.audio

    at_once = 0
    busy = 0
    lock = threading.Lock()
    real = generation.audio.make_track

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal at_once, busy
        with lock:
            busy += 1
            at_once = max(at_once, busy)
        try:
            time.sleep(0.05)  # long enough for the others to pile up
            return real(*args, **kwargs)
        finally:
            with lock:
                busy -= 1

    monkeypatch.setattr(generation.audio, "make_track", counted)
    one = dataclasses.replace(config, generation=dataclasses.replace(
        config.generation, finish_threads=1))
    worker = Worker(service.settlement, {"debug": engine}, one)
    jobs = [await queue(service, f"take {n}", duration=1) for n in range(4)]
    await worker.start()
    try:
        for job in jobs:
            await wait_for_state(service, job.id, JobState.RENDERED)
    finally:
        await worker.stop()
    assert at_once == 1
