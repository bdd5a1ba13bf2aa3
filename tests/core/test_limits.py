"""Usage limits: each refusal is a clear message, and nothing is charged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.config import RateLimit
from bot.core.errors import InvalidRequest, LimitReached
from bot.core.service import MusicService

from .conftest import Clock, complete, make_config, member, music, order, snapshot, track


async def _limited(open_service: Any, tmp_path: Path, **limits: Any) -> MusicService:
    return await open_service(make_config(tmp_path, limits=limits))


async def test_max_queued_per_member(open_service: Any, tmp_path: Path) -> None:
    service = await _limited(open_service, tmp_path, max_queued_per_user=2)
    alice = member()
    await order(service, alice)
    await order(service, alice)
    [job] = await service.settlement.claim(1)  # running jobs still count
    before = snapshot(service.config.database_path)

    with pytest.raises(LimitReached) as info:
        await order(service, alice)

    assert info.value.limit == "max_queued_per_user"
    assert "You already have 2 jobs waiting (limit 2)" in info.value.user_message
    assert snapshot(service.config.database_path) == before
    await order(service, member("bob"))  # others are not affected
    await complete(service, job, track(tmp_path, job))
    await order(service, alice)  # a slot freed up
    assert await service.balance(alice) == 70


async def test_global_queue_cap(open_service: Any, tmp_path: Path) -> None:
    service = await _limited(open_service, tmp_path, max_queue=3)
    for name in ("a", "b", "c"):
        await order(service, member(name))
    before = snapshot(service.config.database_path)

    with pytest.raises(LimitReached, match=r"The queue is full right now\.") as info:
        await order(service, member("d"))
    assert info.value.limit == "max_queue" and info.value.retry_after_s is None

    service.settlement.record_speed(audio_seconds=10, wall_seconds=10, batch_size=1)
    with pytest.raises(LimitReached) as info:
        await order(service, member("d"))
    # room comes when the first queued job is made: 5 s of audio at 1 s per second
    assert info.value.retry_after_s == pytest.approx(5.0)
    assert "Try again in 5 s." in info.value.user_message
    assert snapshot(service.config.database_path) == before

    await service.settlement.claim(1)  # one leaves the queue: room again
    await order(service, member("d"))


async def test_rate_limit_says_when_to_retry(
    open_service: Any, tmp_path: Path, clock: Clock
) -> None:
    service = await _limited(open_service, tmp_path,
                             rate_limit=RateLimit(count=2, window_s=600))
    alice = member()
    first = await order(service, alice)
    clock.advance(100)
    await order(service, alice)
    await service.cancel(alice, first.job.id)  # cancelling does not give the request back
    clock.advance(50)
    before = snapshot(service.config.database_path)

    with pytest.raises(LimitReached) as info:
        await order(service, alice)

    assert info.value.limit == "rate_limit"
    assert info.value.retry_after_s == pytest.approx(450)  # the first request ages out
    assert "2 tracks every 10 min" in info.value.user_message
    assert "Try again in 8 min." in info.value.user_message
    assert snapshot(service.config.database_path) == before
    await order(service, member("bob"))  # per member
    clock.advance(451)
    await order(service, alice)


async def test_max_duration_per_model(open_service: Any, tmp_path: Path) -> None:
    service = await _limited(open_service, tmp_path, model_max_duration_s={"small": 10.0})
    alice = member()
    before = snapshot(service.config.database_path)

    with pytest.raises(InvalidRequest, match="between 1 and 10 seconds") as info:
        await order(service, alice, music(duration=12, model="small"))

    assert info.value.field == "duration"
    assert snapshot(service.config.database_path) == before
    assert (await order(service, alice, music(duration=12, model="medium"))).price == 24
    assert (await order(service, alice, music(duration=10, model="small"))).price == 20
