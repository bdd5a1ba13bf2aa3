"""/cancel: queued jobs are refunded at once, running ones when the worker stops; only the
owner or an admin of the same community may cancel."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.core.errors import (
    InvalidRequest,
    JobNotCancellable,
    JobNotFound,
    NotAuthorized,
    NothingToCancel,
)
from bot.core.models import EventKind, JobState
from bot.core.service import MusicService

from .conftest import (
    RecordingFrontend,
    assert_books_balance,
    complete,
    ledger_rows,
    member,
    order,
    snapshot,
    track,
)


async def test_cancel_queued_job_refunds_at_once(
    service: MusicService, frontend: RecordingFrontend
) -> None:
    alice = member()
    receipt = await order(service, alice)

    job = await service.cancel(alice, receipt.job.id)
    await service.drain_events()

    assert job.state is JobState.CANCELLED and job.refunded == 10
    assert await service.balance(alice) == 100
    assert await service.settlement.claim(4) == []  # the worker never sees it
    assert [e.refunded for e in frontend.events if e.kind is EventKind.CANCELLED] == [10]
    assert_books_balance(service.config.database_path)


async def test_cancel_without_id_picks_newest_active_job(service: MusicService) -> None:
    alice = member()
    older = await order(service, alice)
    newer = await order(service, alice)

    cancelled = await service.cancel(alice)

    assert cancelled.id == newer.job.id
    assert (await service.get_job(older.job.id)).state is JobState.QUEUED


async def test_cancel_with_nothing_active_says_so(service: MusicService) -> None:
    with pytest.raises(NothingToCancel, match="no queued or running job to cancel"):
        await service.cancel(member())


async def test_cancel_running_job_refunds_once_when_worker_stops(
    service: MusicService, frontend: RecordingFrontend
) -> None:
    alice = member()
    await order(service, alice)
    [job] = await service.settlement.claim(1)

    asked = await service.cancel(alice, job.id)
    assert asked.state is JobState.RUNNING and asked.cancel_requested
    assert service.settlement.cancel_requested(job.id)  # what audiocraft's progress callback checks
    assert await service.balance(alice) == 90  # not yet: the GPU is still busy

    results = await asyncio.gather(service.settlement.finish_cancelled(job.id),
                                   service.settlement.finish_cancelled(job.id))

    assert {r.state for r in results} == {JobState.CANCELLED}
    assert await service.balance(alice) == 100
    assert len(ledger_rows(service.config.database_path, "kind = 'refund'")) == 1
    assert not service.settlement.cancel_requested(job.id)
    await service.drain_events()
    assert [e.kind for e in frontend.events if e.job.id == job.id][-1] is EventKind.CANCELLED


async def test_track_finished_after_cancel_is_not_delivered_but_refunded(
    service: MusicService, frontend: RecordingFrontend, tmp_path: Path
) -> None:
    alice = member()
    await order(service, alice)
    [job] = await service.settlement.claim(1)
    await service.cancel(alice, job.id)

    result = await complete(service, job, track(tmp_path, job))

    assert result.state is JobState.CANCELLED and job.id not in frontend.delivered
    assert await service.balance(alice) == 100


async def test_cancelling_a_finished_job_is_refused(
    service: MusicService, tmp_path: Path
) -> None:
    alice = member()
    await order(service, alice)
    [job] = await service.settlement.claim(1)
    await complete(service, job, track(tmp_path, job))
    before = snapshot(service.config.database_path)

    with pytest.raises(JobNotCancellable, match="already done"):
        await service.cancel(alice, job.id)
    assert snapshot(service.config.database_path) == before


async def test_another_member_cannot_cancel_my_job(service: MusicService) -> None:
    receipt = await order(service, member("alice"))
    before = snapshot(service.config.database_path)

    with pytest.raises(NotAuthorized):
        await service.cancel(member("mallory"), receipt.job.id)

    assert snapshot(service.config.database_path) == before
    assert (await service.get_job(receipt.job.id)).state is JobState.QUEUED


async def test_admin_of_same_community_can_cancel_a_members_job(service: MusicService) -> None:
    alice = member("alice")
    receipt = await order(service, alice)

    job = await service.cancel(member("mod", admin=True), receipt.job.id)

    assert job.state is JobState.CANCELLED
    assert await service.balance(alice) == 100
    refund = ledger_rows(service.config.database_path, "kind = 'refund'")[0]
    assert "mod" in refund["reason"]


@pytest.mark.parametrize("admin", [False, True])
async def test_job_of_another_community_is_not_found(service: MusicService, admin: bool) -> None:
    receipt = await order(service, member("alice", community="guild-1"))
    before = snapshot(service.config.database_path)

    with pytest.raises(JobNotFound):
        await service.cancel(member("alice", community="guild-2", admin=admin), receipt.job.id)

    assert snapshot(service.config.database_path) == before


@pytest.mark.parametrize(("job_id", "error"), [
    ("abc", InvalidRequest), (-1, InvalidRequest), (0, InvalidRequest), (2.5, InvalidRequest),
    (True, InvalidRequest), (10**30, InvalidRequest), ("#999999", JobNotFound),
    (999_999, JobNotFound),
])
async def test_cancel_with_bad_or_unknown_job_id_changes_nothing(
    service: MusicService, job_id: object, error: type[Exception]
) -> None:
    alice = member()
    await order(service, alice)
    before = snapshot(service.config.database_path)

    with pytest.raises(error) as info:
        await service.cancel(alice, job_id)

    if isinstance(info.value, InvalidRequest):
        assert info.value.field == "job"
    assert snapshot(service.config.database_path) == before
