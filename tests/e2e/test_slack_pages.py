"""Track pages on Slack: ``/music share N``, ``/music unshare N`` and the link on tracks."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.e2e.slack_fixtures import (
    ADMIN,
    OTHER,
    RunningBot,
    SlackWorld,
    open_world,
    running_app,
)
from tests.e2e.test_slack import make_track

BASE = "https://music.example.org"
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningBot]:
    async with running_app(tmp_path_factory.mktemp("slack-pages")) as running:
        api = dataclasses.replace(running.config.api, public_base_url=BASE)
        yield RunningBot(running.app, dataclasses.replace(running.config, api=api))


@pytest_asyncio.fixture(loop_scope="module")
async def world(bot: RunningBot) -> AsyncIterator[SlackWorld]:
    async with open_world(bot, "socket") as opened:
        yield opened


async def test_share_and_unshare_from_slack(world: SlackWorld) -> None:
    job_id, shared = await make_track(world, "harp arpeggios --duration 1")
    text = shared.blocks[0]["text"]["text"]
    assert f"/music share {job_id}" in text and "/t/" not in text

    await world.command(f"share {job_id}", user=OTHER)
    assert "not allowed" in await world.wait_private("not allowed", user=OTHER)

    await world.command(f"share {job_id}")
    answer = await world.wait_private("is shared")
    link = re.search(rf"<({re.escape(BASE)}/t/[A-Za-z0-9_-]{{16}})>", answer)
    assert link, answer
    assert (await world.service.get_job(job_id)).share_id == link.group(1).rsplit("/", 1)[1]

    await world.command(f"unshare {job_id}", user=ADMIN)
    assert "private again" in await world.wait_private("private again", user=ADMIN)
    assert (await world.service.get_job(job_id)).share_id is None
