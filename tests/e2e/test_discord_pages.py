"""Track pages on Discord: /share and /unshare, and the page link on finished tracks."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator

import pytest

from tests.e2e.discord_fixtures import DiscordWorld, open_world
from tests.e2e.test_discord import finished_job

BASE = "https://music.example.org"


@pytest.fixture
async def world(tmp_path, monkeypatch) -> AsyncIterator[DiscordWorld]:
    async with open_world(tmp_path, monkeypatch) as opened:
        api = dataclasses.replace(opened.config.api, public_base_url=BASE)
        await opened.restart(dataclasses.replace(opened.config, api=api))
        yield opened


def page_link(text: str) -> str:
    match = re.search(rf"<({re.escape(BASE)}/t/[A-Za-z0-9_-]{{16}})>", text)
    assert match, text
    return match.group(1)


async def test_share_gives_a_page_link_and_unshare_takes_it_back(world: DiscordWorld):
    job = await finished_job(world, "harp")
    result = await world.result(job)
    assert f"/share job:{job}" in result.content and "/t/" not in result.content

    world.fake.add_member(world.studio, world.eve)  # a plain member, not the track's owner
    it = await world.fake.slash("share", {"job": job}, user=world.eve, guild=world.studio)
    refused = await it.wait_message()
    assert refused.ephemeral and "not" in refused.content and "/t/" not in refused.content

    it = await world.fake.slash("share", {"job": job}, user=world.bob, guild=world.studio)
    answer = await it.wait_message()
    assert answer.ephemeral
    link = page_link(answer.content)
    assert (await world.service.get_job(job)).share_id == link.rsplit("/", 1)[1]

    again = await world.fake.slash("track", {"job": job}, user=world.bob, guild=world.studio)
    sent = await again.wait_message(lambda m: bool(m.uploads))
    assert page_link(sent.content) == link  # /track carries the page link too

    gone = await world.say("unshare", {"job": job}, user=world.dj)  # an admin of the server
    assert "private again" in gone
    assert (await world.service.get_job(job)).share_id is None


async def test_a_community_that_shares_by_default_gets_the_link_with_the_track(
        world: DiscordWorld):
    api = dataclasses.replace(world.config.api,
                              share_by_default_in={f"discord:{world.studio.id}": True})
    await world.restart(dataclasses.replace(world.config, api=api))
    job = await finished_job(world, "bells")
    result = await world.result(job)
    assert page_link(result.content).endswith((await world.service.get_job(job)).share_id)
