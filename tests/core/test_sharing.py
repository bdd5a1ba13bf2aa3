"""Sharing a track on its page: who may, when, and what the link does afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.core.errors import InvalidRequest, JobNotFound, NotAuthorized
from bot.core.models import Job
from bot.core.service import MusicService
from bot.core.sharing import TrackNotShared, page_url
from tests.core.conftest import (
    GUILD,
    PLATFORM,
    complete,
    make_config,
    member,
    order,
    snapshot,
    track,
)


async def finished(service: MusicService, tmp_path: Path, user: str = "alice") -> Job:
    receipt = await order(service, member(user))
    [claimed] = await service.settlement.claim(1)
    assert claimed.id == receipt.job.id
    return await complete(service, claimed, track(tmp_path, claimed))


async def test_a_track_is_private_until_its_owner_shares_it(
        service: MusicService, tmp_path: Path) -> None:
    job = await finished(service, tmp_path)
    assert job.share_id is None

    shared = await service.sharing.share(member("alice"), job.id)

    assert shared.share_id and len(shared.share_id) >= 16
    found, stored = await service.sharing.shared_track(shared.share_id)
    assert found.id == job.id and stored.path == job.track_path


async def test_sharing_twice_keeps_the_link_and_unsharing_kills_it_for_good(
        service: MusicService, tmp_path: Path) -> None:
    job = await finished(service, tmp_path)
    first = (await service.sharing.share(member("alice"), job.id)).share_id
    assert (await service.sharing.share(member("alice"), job.id)).share_id == first

    assert (await service.sharing.unshare(member("alice"), job.id)).share_id is None
    assert first is not None
    with pytest.raises(TrackNotShared):
        await service.sharing.shared_track(first)

    again = (await service.sharing.share(member("alice"), job.id)).share_id
    assert again and again != first  # the leaked old link stays dead
    with pytest.raises(TrackNotShared):
        await service.sharing.shared_track(first)


async def test_only_the_owner_or_an_admin_of_that_community_may_share(
        service: MusicService, tmp_path: Path) -> None:
    job = await finished(service, tmp_path)
    before = snapshot(service.config.database_path)
    with pytest.raises(NotAuthorized):
        await service.sharing.share(member("bob"), job.id)
    with pytest.raises(JobNotFound):  # another community does not even see the job
        await service.sharing.share(member("alice", community="elsewhere", admin=True), job.id)
    assert (await service.get_job(job.id)).share_id is None
    assert snapshot(service.config.database_path) == before

    shared = await service.sharing.share(member("carol", admin=True), job.id)
    assert shared.share_id
    with pytest.raises(NotAuthorized):
        await service.sharing.unshare(member("bob"), job.id)
    assert (await service.sharing.unshare(member("carol", admin=True), job.id)).share_id is None


async def test_unfinished_and_unknown_jobs_cannot_be_shared(
        service: MusicService, tmp_path: Path) -> None:
    receipt = await order(service, member("alice"))
    with pytest.raises(InvalidRequest, match="not finished"):
        await service.sharing.share(member("alice"), receipt.job.id)
    with pytest.raises(JobNotFound):
        await service.sharing.share(member("alice"), 999)
    with pytest.raises(InvalidRequest):
        await service.sharing.share(member("alice"), "twelve")
    assert (await service.get_job(receipt.job.id)).share_id is None


@pytest.mark.parametrize("share_id", ["", "x", "../../etc/passwd", "a" * 200, "abc def ghi jkl"])
async def test_made_up_share_ids_find_nothing(service: MusicService, share_id: str) -> None:
    with pytest.raises(TrackNotShared):
        await service.sharing.shared_track(share_id)


async def test_a_deleted_file_is_no_longer_served(service: MusicService, tmp_path: Path) -> None:
    job = await finished(service, tmp_path)
    shared = await service.sharing.share(member("alice"), job.id)
    assert job.track_path and shared.share_id
    Path(job.track_path).unlink()  # the retention sweep
    _, track = await service.sharing.shared_track(shared.share_id)
    # The page asks the track store for the file (it may live on another machine): gone.
    assert await service.tracks.local(track) is None


@pytest.mark.parametrize(("default", "overrides", "expect"), [
    (False, {}, False),
    (True, {}, True),
    (False, {f"{PLATFORM}:{GUILD}": True}, True),
    (True, {f"{PLATFORM}:{GUILD}": False}, False),
    (False, {f"{PLATFORM}:other": True}, False),
])
async def test_the_communitys_default_shares_a_track_when_it_renders(
        open_service: Any, tmp_path: Path, default: bool, overrides: dict[str, bool],
        expect: bool) -> None:
    config = make_config(tmp_path, api={"share_by_default": default,
                                        "share_by_default_in": overrides})
    service = await open_service(config)
    job = await finished(service, tmp_path)
    assert bool(job.share_id) is expect
    if expect:
        assert job.share_id is not None
        assert (await service.sharing.shared_track(job.share_id))[0].id == job.id


async def test_page_links_need_a_base_url_and_a_shared_track(
        open_service: Any, tmp_path: Path) -> None:
    config = make_config(tmp_path, api={"public_base_url": "https://music.example.org/"})
    service = await open_service(config)
    job = await finished(service, tmp_path)
    assert page_url(config, job) is None
    shared = await service.sharing.share(member("alice"), job.id)
    assert page_url(config, shared) == f"https://music.example.org/t/{shared.share_id}"
    assert page_url(make_config(tmp_path), shared) is None
