"""Queue order, positions, ETAs and history as members see them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.core.errors import InvalidRequest
from bot.core.models import JobState
from bot.core.service import MusicService

from .conftest import complete, make_config, member, music, order, track


async def test_one_members_five_jobs_do_not_starve_another_members_single_job(
    service: MusicService,
) -> None:
    alice, bob = member("alice"), member("bob")
    for _ in range(5):
        await order(service, alice)
    bobs = await order(service, bob)

    assert bobs.position == 2  # right after alice's first, not sixth
    claimed = [(await service.settlement.claim(1))[0].account.user for _ in range(6)]
    assert claimed == ["alice", "bob", "alice", "alice", "alice", "alice"]


async def test_batched_claim_includes_the_other_members_job(service: MusicService) -> None:
    alice, bob = member("alice"), member("bob")
    for _ in range(5):
        await order(service, alice)
    await order(service, bob)

    batch = await service.settlement.claim(2)

    assert [job.account.user for job in batch] == ["alice", "bob"]
    assert all(job.state is JobState.RUNNING and job.attempts == 1 for job in batch)


async def test_claim_batches_jobs_of_one_model_whatever_their_length_and_settings(
    service: MusicService,
) -> None:
    alice = member()
    await order(service, alice, music(duration=5))
    await order(service, alice, music(duration=8, temperature=0.5))
    await order(service, alice, music(duration=5, model="medium"))
    await order(service, alice, music(duration=3, top_k=10))

    first = await service.settlement.claim(4, batch_key="small")
    assert [j.params.duration for j in first] == [5, 8, 3]
    assert await service.settlement.claim(4, batch_key="small") == []
    [other] = await service.settlement.claim(4)
    assert other.params.model == "medium"


async def test_positions_and_eta_are_reported_and_grow_down_the_queue(
    service: MusicService,
) -> None:
    alice, bob = member("alice"), member("bob")
    first = await order(service, alice)
    assert first.position == 1 and first.eta_s is None  # no speed measured yet: no guess

    # 0.5 s per second of audio:
    service.settlement.record_speed(audio_seconds=10, wall_seconds=5, batch_size=1)
    second = await order(service, bob, music(duration=5))
    third = await order(service, alice, music(duration=10))

    assert (second.position, third.position) == (2, 3)
    # Four slots: the first three decode side by side, each at 0.5 s per audio second.
    assert second.eta_s == pytest.approx(2.5)
    assert third.eta_s == pytest.approx(5.0)

    info = await service.queue(alice)
    assert [(job.id, place) for job, place in info.mine] == [
        (first.job.id, 1), (third.job.id, 3)]
    assert (info.queued_total, info.running_total) == (3, 0)
    assert info.eta_s == pytest.approx(5.0)

    await service.settlement.claim(1)  # alice's first starts running
    info = await service.queue(bob)
    assert [place for _, place in info.mine] == [1]
    assert (info.queued_total, info.running_total) == (2, 1)


async def test_eta_replays_the_slots_when_the_queue_is_longer_than_the_batch(
    open_service: Any, tmp_path: Path
) -> None:
    service = await open_service(make_config(tmp_path, generation={"max_batch": 2}))
    service.settlement.record_speed(audio_seconds=10, wall_seconds=10, batch_size=2)
    receipts = [await order(service, member(f"m{i}"), music(duration=d))
                for i, d in enumerate((10, 4, 4, 10))]
    # Two slots at 1 s per audio second: 4 s job done at 4 s, the next 4 s job takes its slot
    # and ends at 8 s, the first 10 s job at 10 s, the last starts at 8 s and ends at 18 s.
    assert [r.eta_s for r in receipts] == pytest.approx([10.0, 4.0, 8.0, 18.0])


async def test_history_lists_newest_first_with_states(
    service: MusicService, tmp_path: Path
) -> None:
    alice = member()
    a = await order(service, alice, music("first"))
    b = await order(service, alice, music("second"))
    c = await order(service, alice, music("third"))
    [job] = await service.settlement.claim(1)
    await complete(service, job, track(tmp_path, job))
    [job] = await service.settlement.claim(1)
    await service.settlement.fail(job.id, "model crashed")
    await order(service, member("bob"))  # not alice's

    history = await service.history(alice)

    assert [(j.id, j.params.prompt, j.state) for j in history] == [
        (c.job.id, "third", JobState.QUEUED),
        (b.job.id, "second", JobState.FAILED),
        (a.job.id, "first", JobState.DONE),
    ]
    assert history[1].refunded == 10 and history[1].error == "model crashed"
    assert len(await service.history(alice, limit=1)) == 1


@pytest.mark.parametrize("limit", [0, -5, 201, 2.5, "ten", True])
async def test_history_rejects_silly_limits(service: MusicService, limit: object) -> None:
    with pytest.raises(InvalidRequest, match="limit"):
        await service.history(member(), limit=limit)  # type: ignore[arg-type]
