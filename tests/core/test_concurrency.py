"""Money under concurrency: no double spend, no lost or doubled refund, idempotent requests."""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

from bot.core.errors import InsufficientTokens, JobNotCancellable
from bot.core.models import EventKind, JobState
from bot.core.service import MusicService

from .conftest import (
    RecordingFrontend,
    assert_books_balance,
    complete,
    destination,
    ledger_rows,
    member,
    music,
    order,
    track,
)

TASKS = 50
REQUESTS_PER_TASK = 20
MEMBERS = 25


async def _requester(service: MusicService, task: int, outcome: dict[str, int]) -> None:
    """One chat user hammering /music (and sometimes /cancel) with random durations."""
    rng = random.Random(task)
    actor = member(f"user{task % MEMBERS}")
    for _ in range(REQUESTS_PER_TASK):
        duration = rng.choice([1, 5, 7.5, 10])  # 10, 10, 15, 20 tokens
        try:
            receipt = await order(service, actor, music(duration=duration))
        except InsufficientTokens as exc:
            # Refused only when the balance really did not cover the price.
            assert exc.balance < exc.price
            outcome["refused"] += 1
        else:
            assert receipt.balance >= 0 and not receipt.duplicate
            outcome["charged"] += 1
            if rng.random() < 0.1:
                with contextlib.suppress(JobNotCancellable):  # the worker finished it first
                    await service.cancel(actor, receipt.job.id)
        await asyncio.sleep(0)


async def _worker(
    service: MusicService, tmp_path: Path, stop: asyncio.Event, seed: int = 0
) -> None:
    """A generation worker that completes, fails, retries, releases and cancels at random."""
    rng = random.Random(seed)
    while not (stop.is_set() and await _idle(service)):
        batch = await service.settlement.claim(4)
        if not batch:
            await asyncio.sleep(0.001)
            continue
        for job in batch:
            roll = rng.random()
            if roll < 0.5:
                await complete(service, job, track(tmp_path, job))
            elif roll < 0.65:
                await service.settlement.fail(job.id, "out of memory", retryable=True)
            elif roll < 0.8:
                await service.settlement.fail(job.id, "model crashed")
            elif roll < 0.9:
                await service.settlement.release([job.id])
            else:
                await service.cancel(member(job.account.user), job.id)
                await service.settlement.finish_cancelled(job.id)


async def _idle(service: MusicService) -> bool:
    live = await service.db.fetchone(
        "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')")
    return live is not None and live[0] == 0


async def test_fifty_concurrent_members_never_overspend_and_every_token_is_accounted(
    service: MusicService, frontend: RecordingFrontend, tmp_path: Path
) -> None:
    outcome = {"charged": 0, "refused": 0}
    stop = asyncio.Event()
    workers = [asyncio.create_task(_worker(service, tmp_path, stop, seed)) for seed in (1, 2)]
    await asyncio.gather(*(_requester(service, t, outcome) for t in range(TASKS)))
    stop.set()
    await asyncio.wait_for(asyncio.gather(*workers), timeout=60)
    await service.drain_events()

    assert outcome["charged"] + outcome["refused"] == TASKS * REQUESTS_PER_TASK
    assert outcome["refused"] > 0, "balances were meant to run out"
    db_path = service.config.database_path
    assert_books_balance(db_path)
    charges = ledger_rows(db_path, "kind = 'charge'")
    assert len(charges) == outcome["charged"]
    # Every charged job ended delivered (the frontend got it) or refunded; none is stuck.
    jobs = await service.db.fetchall("SELECT id, state FROM jobs")
    assert len(jobs) == outcome["charged"]
    for job_id, state in jobs:
        assert state in ("done", "failed", "cancelled")
        assert (job_id in frontend.delivered) == (state == "done")


async def test_same_request_id_twice_charges_once(service: MusicService) -> None:
    alice = member()
    first = await order(service, alice, key="interaction-1")
    again = await order(service, alice, key="interaction-1")

    assert not first.duplicate and again.duplicate
    assert again.job.id == first.job.id and again.balance == first.balance == 90
    assert await service.balance(alice) == 90
    assert len(ledger_rows(service.config.database_path, "kind = 'charge'")) == 1


async def test_same_request_id_sent_concurrently_charges_once(service: MusicService) -> None:
    alice = member()
    receipts = await asyncio.gather(
        *(service.request_music(alice, music(), destination(alice), "retry-storm")
          for _ in range(20)))

    assert sum(not r.duplicate for r in receipts) == 1
    assert {r.job.id for r in receipts} == {receipts[0].job.id}
    assert await service.balance(alice) == 90
    assert len(ledger_rows(service.config.database_path, "kind = 'charge'")) == 1
    assert_books_balance(service.config.database_path)


async def test_failure_reported_twice_refunds_once(service: MusicService) -> None:
    alice = member()
    receipt = await order(service, alice)
    [job] = await service.settlement.claim(1)

    first = await service.settlement.fail(job.id, "model crashed")
    second = await service.settlement.fail(job.id, "model crashed again")

    assert first.state is second.state is JobState.FAILED
    assert await service.balance(alice) == 100
    refunds = ledger_rows(service.config.database_path, "kind = 'refund' AND job_id = ?",
                          (receipt.job.id,))
    assert len(refunds) == 1 and refunds[0]["delta"] == 10


async def test_failure_reported_twice_concurrently_refunds_once(service: MusicService) -> None:
    alice = member()
    for _ in range(5):
        await order(service, alice)
    running = await service.settlement.claim(5)
    assert len(running) == 5

    await asyncio.gather(*(service.settlement.fail(job.id, "boom")
                           for job in running for _ in range(3)))

    assert await service.balance(alice) == 100
    assert len(ledger_rows(service.config.database_path, "kind = 'refund'")) == 5
    assert_books_balance(service.config.database_path)


async def test_failure_after_delivery_refunds_nothing(
    service: MusicService, frontend: RecordingFrontend, tmp_path: Path
) -> None:
    alice = member()
    await order(service, alice)
    [job] = await service.settlement.claim(1)
    done = await complete(service, job, track(tmp_path, job))

    after = await service.settlement.fail(job.id, "late error from a batch-mate")

    assert done.state is after.state is JobState.DONE
    assert job.id in frontend.delivered
    assert await service.balance(alice) == 90
    assert ledger_rows(service.config.database_path, "kind = 'refund'") == []


async def test_undeliverable_track_is_kept_for_track_and_not_refunded(
    service: MusicService, frontend: RecordingFrontend, tmp_path: Path
) -> None:
    """A made track is never refunded: the member is told and can fetch it with /track."""
    alice = member()
    await order(service, alice)
    [job] = await service.settlement.claim(1)
    frontend.refuse_uploads = True

    result = await complete(service, job, track(tmp_path, job))
    await service.drain_events()

    assert result.state is JobState.DONE and result.delivered_at is None
    assert "too large" in (result.delivery_error or "")
    assert await service.balance(alice) == 90
    told = [e for e in frontend.events if e.kind is EventKind.UNDELIVERED]
    assert told and told[0].job.id == job.id
    again, _ = await service.stored_track(alice, job.id)
    assert again.id == job.id
    assert_books_balance(service.config.database_path)


async def test_retryable_failure_requeues_until_attempts_run_out(service: MusicService) -> None:
    alice = member()
    await order(service, alice)  # max_attempts defaults to 2
    [job] = await service.settlement.claim(1)

    retried = await service.settlement.fail(job.id, "CUDA out of memory", retryable=True)
    assert retried.state is JobState.QUEUED and await service.balance(alice) == 90
    [job] = await service.settlement.claim(1)
    final = await service.settlement.fail(job.id, "CUDA out of memory", retryable=True)

    assert final.state is JobState.FAILED and final.attempts == 2
    assert await service.balance(alice) == 100
    assert_books_balance(service.config.database_path)
