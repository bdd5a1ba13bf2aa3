"""Groups in the queue and the ledger: charged all or nothing, one fair turn (so one claim
takes the takes together), one request toward a member's limits, cancelled together."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.core.errors import InsufficientTokens, LimitReached
from bot.core.models import JobState
from bot.core.service import MusicService

from .conftest import assert_books_balance, make_config, member, music, order, track


async def test_takes_get_consecutive_seeds_and_one_charge_each(service: MusicService) -> None:
    alice = member("alice")
    receipt = await order(service, alice, music(seed=41, takes=3))
    assert [job.params.seed for job in receipt.group] == [41, 42, 43]
    assert receipt.price == 30 and receipt.balance == 70
    assert {job.group_id for job in receipt.group} == {receipt.job.id}
    entries = await service.ledger(member("admin", admin=True), "alice")
    assert sorted(e.job_id for e in entries if e.kind.value == "charge") == [
        job.id for job in receipt.group]


async def test_a_group_is_one_turn_so_one_claim_takes_it_whole(service: MusicService) -> None:
    carol, bob, alice = member("carol"), member("bob"), member("alice")
    await order(service, carol)
    takes = await order(service, bob, music(takes=3))
    later = await order(service, bob)  # bob's second request waits behind alice's first
    alices = await order(service, alice)
    assert alices.position == 5 and takes.position == 2

    claimed = await service.settlement.claim(4)
    assert [job.id for job in claimed] == [takes.job.id - 1, *(j.id for j in takes.group)]
    rest = await service.settlement.claim(4)
    assert sorted(job.id for job in rest) == sorted([alices.job.id, later.job.id])


async def test_a_retried_group_request_charges_nothing_again(service: MusicService) -> None:
    alice = member("alice")
    first = await order(service, alice, music(takes=2), key="same")
    again = await order(service, alice, music(takes=2), key="same")
    assert again.duplicate and again.job.id == first.job.id
    assert await service.balance(alice) == 80


async def test_all_or_nothing_when_the_balance_or_the_queue_is_short(
    open_service: Callable[..., Any], tmp_path: Path,
) -> None:
    service = await open_service(make_config(tmp_path, limits={"max_queue": 4}))
    alice = member("alice")
    with pytest.raises(InsufficientTokens) as refused:
        await order(service, alice, music(duration=20, takes=3))  # 3 x 40 > 100
    assert "this costs 120" in refused.value.user_message
    await order(service, member("bob"), music(takes=2))
    with pytest.raises(LimitReached):
        await order(service, alice, music(takes=3))  # 2 queued + 3 > 4
    assert await service.balance(alice) == 100
    assert await service.history(alice) == []


async def test_a_group_counts_once_toward_a_members_queued_jobs(
    open_service: Callable[..., Any], tmp_path: Path,
) -> None:
    service = await open_service(make_config(tmp_path, limits={"max_queued_per_user": 2}))
    alice = member("alice")
    await order(service, alice, music(takes=4))
    await order(service, alice)
    with pytest.raises(LimitReached):
        await order(service, alice)


async def test_cancel_ends_every_unfinished_take_with_one_refund_each(
    service: MusicService, tmp_path: Path,
) -> None:
    alice = member("alice")
    receipt = await order(service, alice, music(takes=3))
    [running] = await service.settlement.claim(1)  # the first take is being generated

    head = await service.cancel(alice, receipt.group[2].id)  # any take's cancel stops all
    assert head.refunded == 20  # the two queued takes at once; the running one when it stops
    assert service.settlement.cancel_requested(running.id)
    await service.settlement.finish_cancelled(running.id)
    states = [(await service.get_job(job.id)).state for job in receipt.group]
    assert states == [JobState.CANCELLED] * 3
    assert await service.balance(alice) == 100
    assert_books_balance(service.config.database_path)


async def test_the_group_cancel_button_works_after_its_first_take_is_made(
    service: MusicService, tmp_path: Path,
) -> None:
    alice = member("alice")
    receipt = await order(service, alice, music(takes=3))
    [first] = await service.settlement.claim(1)
    await service.settlement.rendered(first, track(tmp_path, first))

    head = await service.cancel(alice, receipt.job.id)  # the status message's button
    assert head.refunded == 20
    assert (await service.get_job(first.id)).state is JobState.RENDERED  # made: kept
    assert await service.balance(alice) == 90
