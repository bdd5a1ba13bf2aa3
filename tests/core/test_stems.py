"""Stems requests in the core: priced before charging, charged once, refunded once.

The separation itself is tested in tests/generation/test_stems.py; here the worker side is
played by the settlement port, as in the other core tests.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from bot.core.errors import InvalidRequest, JobNotFound
from bot.core.models import JobKind, JobState
from bot.core.service import MusicService
from bot.core.stems import stems_batch_key
from tests.core.conftest import (
    complete,
    destination,
    job_row,
    ledger_rows,
    make_config,
    member,
    music,
    order,
    track,
)

_keys = iter(range(10**9))


async def finished_track(service: MusicService, tmp_path: Path, seconds: float = 20) -> int:
    """A delivered 20 s track of alice's; returns its job id."""
    receipt = await order(service, member(), music(duration=seconds))
    (job,) = await service.settlement.claim(1)
    await complete(service, job, track(tmp_path, job))
    return receipt.job.id


async def ask_stems(service: MusicService, job_id: Any, user: str = "alice") -> Any:
    actor = member(user)
    return await service.stems(actor, job_id, destination(actor), f"stems-{next(_keys)}")


async def test_the_price_shown_is_what_is_charged(
    service: MusicService, tmp_path: Path
) -> None:
    source = await finished_track(service, tmp_path, seconds=20)
    shown = await service.stems_price(member(), source)
    before = await service.balance(member())

    receipt = await ask_stems(service, source)

    assert shown == 20  # pricing.stems: 1 token per second of the source, minimum 5
    assert receipt.price == shown
    assert receipt.balance == before - shown
    assert receipt.job.kind == JobKind.STEMS
    assert receipt.job.source_job_id == source
    assert job_row(service.config.database_path, receipt.job.id)["batch_key"] == (
        stems_batch_key(service.config))


async def test_short_tracks_pay_the_minimum(service: MusicService, tmp_path: Path) -> None:
    source = await finished_track(service, tmp_path, seconds=2)
    assert await service.stems_price(member(), source) == 5


async def test_a_second_request_returns_the_first_job_and_charges_nothing(
    service: MusicService, tmp_path: Path
) -> None:
    source = await finished_track(service, tmp_path)
    first = await ask_stems(service, source)
    balance = await service.balance(member())

    again = await ask_stems(service, source, user="bob")  # anyone in the community

    assert again.duplicate and again.job.id == first.job.id
    assert await service.balance(member()) == balance
    assert len(ledger_rows(service.config.database_path, "job_id = ? AND kind = 'charge'",
                           (first.job.id,))) == 1


async def test_failed_stems_refund_once_and_may_be_asked_again(
    service: MusicService, tmp_path: Path
) -> None:
    source = await finished_track(service, tmp_path)
    before = await service.balance(member())
    first = await ask_stems(service, source)
    (job,) = await service.settlement.claim(1, batch_key=stems_batch_key(service.config))

    await service.settlement.fail(job.id, "the stems model hit an internal error")
    await service.settlement.fail(job.id, "reported twice")  # a second report changes nothing

    assert await service.balance(member()) == before
    refunds = ledger_rows(service.config.database_path, "job_id = ? AND kind = 'refund'",
                          (first.job.id,))
    assert len(refunds) == 1
    again = await ask_stems(service, source)
    assert not again.duplicate and again.job.id != first.job.id


async def test_cancelling_queued_stems_refunds(service: MusicService, tmp_path: Path) -> None:
    source = await finished_track(service, tmp_path)
    before = await service.balance(member())
    receipt = await ask_stems(service, source)

    cancelled = await service.cancel(member(), receipt.job.id)

    assert cancelled.state is JobState.CANCELLED
    assert await service.balance(member()) == before


async def test_music_slots_never_claim_stems(service: MusicService, tmp_path: Path) -> None:
    source = await finished_track(service, tmp_path)
    await ask_stems(service, source)
    assert await service.settlement.claim(4, batch_key="small") == []
    (job,) = await service.settlement.claim(4, batch_key=stems_batch_key(service.config))
    assert job.kind == JobKind.STEMS and job.batch_key == "stems:htdemucs"


@pytest.mark.parametrize("case", ["queued", "stems of stems", "other community", "missing"])
async def test_refused_requests_charge_nothing(
    service: MusicService, tmp_path: Path, case: str
) -> None:
    if case == "queued":
        job_id: Any = (await order(service, member())).job.id
    else:
        job_id = await finished_track(service, tmp_path)
    if case == "stems of stems":
        job_id = (await ask_stems(service, job_id)).job.id
    balance = await service.balance(member())
    actor = member("carol", community="other") if case == "other community" else member()
    if case == "missing":
        job_id = 999

    with pytest.raises((InvalidRequest, JobNotFound)) as refused:
        await service.stems(actor, job_id, destination(actor), f"stems-{next(_keys)}")

    assert refused.value.user_message
    assert await service.balance(member()) == balance


async def test_a_deleted_source_is_refused_before_charging(
    service: MusicService, tmp_path: Path
) -> None:
    source = await finished_track(service, tmp_path)
    Path((await service.get_job(source)).track_path or "").unlink()
    balance = await service.balance(member())

    with pytest.raises(InvalidRequest, match="no longer stored"):
        await ask_stems(service, source)
    assert await service.balance(member()) == balance


async def test_stems_turned_off(open_service: Any, tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config = dataclasses.replace(config, models=dataclasses.replace(config.models, stems=""))
    service = await open_service(config)
    source = await finished_track(service, tmp_path)
    with pytest.raises(InvalidRequest, match="turned off"):
        await ask_stems(service, source)
