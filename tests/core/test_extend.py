"""Extend: continuing a delivered track, including the instant right after it appears."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Config
from bot.core.errors import InvalidRequest, JobNotFound
from bot.core.models import Job, JobState, Receipt, Track
from bot.core.service import MusicService

from .conftest import RecordingFrontend, complete, destination, member, order, track


class ExtendOnArrival(RecordingFrontend):
    """A member who presses Extend as soon as the upload lands, before delivery returns."""

    def __init__(self) -> None:
        super().__init__()
        self.service: MusicService | None = None
        self.receipts: list[Receipt] = []

    async def deliver(self, job: Job, track: Track) -> None:
        await super().deliver(job, track)
        if self.service is not None and job.params.continue_from is None:
            alice = member()
            self.receipts.append(await self.service.extend(
                alice, job.id, 10, destination(alice), f"extend-{job.id}"))


async def test_extend_pressed_while_the_track_is_being_delivered_is_accepted(
    open_service, config: Config, tmp_path: Path
) -> None:
    service = await open_service(config)
    frontend = ExtendOnArrival()
    frontend.service = service
    service.register_frontend(frontend)
    first = await order(service, member())
    (job,) = await service.settlement.claim(1)
    await complete(service, job, track(tmp_path, job))

    assert (await service.get_job(first.job.id)).state is JobState.DONE
    (extension,) = frontend.receipts
    assert extension.job.params.continue_from == first.job.id
    assert extension.job.params.duration == 10
    assert extension.price == service.price(10)


async def test_a_failed_track_cannot_be_extended(service: MusicService, tmp_path: Path) -> None:
    first = await order(service, member())
    (job,) = await service.settlement.claim(1)
    await service.settlement.fail(job.id, "boom")
    alice = member()
    with pytest.raises(InvalidRequest, match="no finished track"):
        await service.extend(alice, first.job.id, 10, destination(alice), "extend-x")


async def test_a_finished_track_can_be_sent_again_until_it_is_deleted(
    service: MusicService, tmp_path: Path
) -> None:
    first = await order(service, member())
    (job,) = await service.settlement.claim(1)
    await complete(service, job, track(tmp_path, job))
    bob = member("bob")  # anyone in the community may ask for it again

    again, stored = await service.stored_track(bob, first.job.id)
    assert again.id == first.job.id
    assert Path(stored.path).read_bytes() == b"ID3"

    Path(stored.path).unlink()  # the retention sweep deleted it
    with pytest.raises(InvalidRequest, match="no longer stored"):
        await service.stored_track(bob, first.job.id)
    with pytest.raises(JobNotFound):
        await service.stored_track(member(community="elsewhere"), first.job.id)
