"""The job's life after the charge: leases, the delivery outbox, refunds that never fail."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bot.core.db import Database, DatabaseBusy
from bot.core.errors import JobNotCancellable
from bot.core.ledger import MAX_BALANCE
from bot.core.models import JobState
from bot.core.service import MusicService

from .conftest import (
    Clock,
    RecordingFrontend,
    assert_books_balance,
    complete,
    destination,
    member,
    music,
    order,
    track,
)

MOD = member("mod", admin=True)


async def test_a_refund_lands_even_above_the_admin_cap(service: MusicService) -> None:
    alice = member()
    receipt = await order(service, alice)
    await service.set_balance(MOD, "alice", MAX_BALANCE)  # set while the job is pending

    cancelled = await service.cancel(alice, receipt.job.id)

    assert cancelled.state is JobState.CANCELLED
    assert await service.balance(alice) == MAX_BALANCE + receipt.price
    assert_books_balance(service.config.database_path)


async def test_a_job_failing_above_the_cap_is_refunded_and_recovery_still_runs(
    open_service: Any, config: Any, clock: Clock
) -> None:
    service: MusicService = await open_service(config)
    alice = member()
    receipt = await order(service, alice)
    [job] = await service.settlement.claim(1)
    await service.set_balance(MOD, "alice", MAX_BALANCE)
    ended = await service.settlement.fail(job.id, "the model broke")
    assert ended.state is JobState.FAILED
    assert await service.balance(alice) == MAX_BALANCE + receipt.price
    assert not await service.recovery.recover()  # nothing left for a restart to trip on


async def test_a_live_lease_is_never_taken_over(open_service: Any, config: Any,
                                                clock: Clock) -> None:
    mine: MusicService = await open_service(config)
    other: MusicService = await open_service(config)
    await order(mine, member())
    [job] = await mine.settlement.claim(1)

    await mine.leases.renew()
    clock.advance(config.generation.lease_s - 1)
    assert not await other.recovery.recover()  # the owner is alive and renewing
    await mine.leases.renew()
    clock.advance(config.generation.lease_s - 1)
    assert not await other.recovery.recover()
    clock.advance(2)  # the owner stopped renewing: the lease ran out
    assert (await other.recovery.recover()).requeued == [job.id]
    again = await other.get_job(job.id)
    assert again.attempts == 0 and again.crashes == 1  # a death spends no attempt


async def test_a_cancel_from_another_process_reaches_the_renderer_at_its_heartbeat(
    open_service: Any, config: Any
) -> None:
    renderer: MusicService = await open_service(config)
    frontend_side: MusicService = await open_service(config)
    alice = member()
    await order(frontend_side, alice)
    [job] = await renderer.settlement.claim(1)

    await frontend_side.cancel(alice, job.id)
    assert not renderer.settlement.cancel_requested(job.id)
    await renderer.leases.renew()
    assert renderer.settlement.cancel_requested(job.id)


async def test_a_rendered_track_is_never_refunded_or_cancelled(
    service: MusicService, tmp_path: Path, frontend: RecordingFrontend
) -> None:
    alice = member()
    await order(service, alice)
    [job] = await service.settlement.claim(1)
    await service.settlement.rendered(job, track(tmp_path, job))

    failed = await service.settlement.fail(job.id, "late failure report")
    assert failed.state is JobState.RENDERED and failed.refunded == 0
    assert not (await service.recovery.recover())
    with pytest.raises(JobNotCancellable, match="made and being delivered"):
        await service.cancel(alice, job.id)
    await service.delivery.deliver_due()
    assert (await service.get_job(job.id)).state is JobState.DONE
    assert job.id in frontend.delivered
    assert_books_balance(service.config.database_path)


async def test_delivery_tokens_are_forgotten_once_delivered(
    service: MusicService, tmp_path: Path
) -> None:
    alice = member()
    where = dataclasses.replace(destination(alice), interaction_token="secret-token",
                                token_expires_at=1e12)
    receipt = await service.request_music(alice, music(), where, "with-token")
    [job] = await service.settlement.claim(1)
    assert job.destination.interaction_token == "secret-token"
    done = await complete(service, job, track(tmp_path, job))
    assert done.id == receipt.job.id and done.destination.interaction_token is None


async def _service_with_short_busy_wait(
    config: Any, clock: Clock, frontend: RecordingFrontend
) -> MusicService:
    db = await Database(config.database_path, busy_timeout_ms=100).open()
    service = MusicService(config, db, clock=clock)
    service.register_frontend(frontend)
    await service.start()
    return service


@pytest.mark.sqlite_only  # another process holding SQLite's write lock stands for an outage
async def test_a_settle_the_database_refuses_for_a_while_is_retried_until_it_lands(
    config: Any, clock: Clock, frontend: RecordingFrontend, tmp_path: Path
) -> None:
    service = await _service_with_short_busy_wait(config, clock, frontend)
    try:
        await order(service, member())
        [job] = await service.settlement.claim(1)
        holder = sqlite3.connect(config.database_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the database cannot take our write for now
        settling = asyncio.create_task(service.settlement.rendered(job, track(tmp_path, job)))
        await asyncio.sleep(0.6)
        assert not settling.done()  # still trying, not given up and not lost
        holder.rollback()
        holder.close()
        assert (await settling).state is JobState.RENDERED
        assert service.settlement.held_jobs() == []
    finally:
        await service.db.close()


@pytest.mark.sqlite_only
async def test_a_settle_given_up_leaves_the_job_to_recovery_not_running_for_good(
    open_service: Any, config: Any, clock: Clock, frontend: RecordingFrontend,
    tmp_path: Path,
) -> None:
    """The worker lives on, but its settle failed for longer than a lease: its heartbeat
    stops renewing that job, so the lease lapses and another process re-queues it."""
    config = dataclasses.replace(
        config, generation=dataclasses.replace(config.generation, lease_s=3.0))
    service = await _service_with_short_busy_wait(config, clock, frontend)
    other: MusicService = await open_service(config)
    try:
        receipt = await order(service, member())
        [job] = await service.settlement.claim(1)
        holder = sqlite3.connect(config.database_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(DatabaseBusy):
                await service.settlement.fail(job.id, "boom")
        finally:
            holder.rollback()
            holder.close()
        assert service.settlement.held_jobs() == []
        assert job.id not in await service.leases.renew()  # the live heartbeat lets it go
        clock.advance(config.generation.lease_s + 1)
        assert (await other.recovery.recover()).requeued == [job.id]
        assert (await other.get_job(job.id)).state is JobState.QUEUED
        assert await other.balance(member()) == 100 - receipt.price  # charged once, pending
        assert_books_balance(config.database_path)
    finally:
        await service.db.close()


async def test_stopping_delivery_as_a_track_arrives_still_stops_it(
    service: MusicService
) -> None:
    """The delivery loop is cancelled in the same instant its wake-up is set (another
    process's track, a NOTIFY): it must stop anyway, or the bot's shutdown waits for ever
    (asyncio.wait_for on Python 3.11 swallowed exactly that cancel)."""
    task = asyncio.create_task(service.delivery.run_forever())
    for _ in range(20):  # let it reach its wait, then race the wake-up and the cancel
        await asyncio.sleep(0.01)
        service.delivery._ready.set()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done, "the delivery loop did not stop when cancelled"
        task = asyncio.create_task(service.delivery.run_forever())
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
