"""Keys from real chat: ``/apikey`` on Discord (the real discord.py against the fake Discord)
answers privately, and the key it shows acts as that member, with that member's rights."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.core.apikeys import UnknownKey
from tests.e2e.discord_fixtures import DiscordWorld, open_world

pytestmark = pytest.mark.slow
KEY = re.compile(r"mb_[0-9a-f]+_[A-Za-z0-9_-]+")


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordWorld]:
    async with open_world(tmp_path, monkeypatch) as w:
        yield w


async def create(world: DiscordWorld, user: object) -> str:
    it = await world.fake.slash("apikey", {"action": "create", "label": "@everyone build"},
                                user=user, guild=world.studio)
    answer = await it.wait_message()
    assert answer.ephemeral, "a key must never be shown in the channel"
    found = KEY.search(answer.content)
    assert found, answer.content
    return found.group(0)


async def test_apikey_on_discord_is_private_acts_as_the_member_and_admins_revoke(
    world: DiscordWorld,
) -> None:
    keys = world.service.apikeys
    bob_key = await create(world, world.bob)
    admin_key = await create(world, world.olga)  # olga has the admin role in studio
    bob = await keys.authenticate(bob_key)
    assert (bob.platform, bob.community, bob.user, bob.is_admin) == (
        "discord", str(world.studio.id), str(world.bob.id), False)
    assert (await keys.authenticate(admin_key)).is_admin

    listed = await world.say("apikey", {"action": "list"}, user=world.bob)
    assert f"#{bob.id}" in listed and bob_key not in listed  # the secret is never shown again
    refused = await world.say("apikey", {"action": "revoke", "member": world.olga},
                              user=world.bob)
    assert "not allowed" in refused
    done = await world.say("apikey", {"action": "revoke", "member": world.bob},
                           user=world.olga)
    assert f"#{bob.id}" in done
    with pytest.raises(UnknownKey):
        await keys.authenticate(bob_key)


async def test_music_apikey_on_slack_is_private_and_charges_nothing(tmp_path: Path) -> None:
    from tests.e2e.slack_fixtures import ADMIN, MEMBER, open_world, running_app

    async with running_app(tmp_path) as bot, open_world(bot, "socket") as slack:
        ledger = await slack.ledger()
        await slack.command("apikey create --label jam")
        text = await slack.wait_private("shown only once", user=MEMBER)
        found = KEY.search(text)
        assert found, text
        assert not any(found.group(0) in str(m) for m in slack.fake.messages), "leaked"
        key = await slack.service.apikeys.authenticate(found.group(0))
        assert (key.platform, key.community, key.user, key.label) == (
            "slack", slack.fake.team_id, MEMBER, "jam")

        await slack.command(f"apikey revoke --member <@{MEMBER}>", user=ADMIN)
        await slack.wait_private(f"#{key.id}", user=ADMIN)
        with pytest.raises(UnknownKey):
            await slack.service.apikeys.authenticate(found.group(0))
        assert await slack.ledger() == ledger  # no prompt was read as /music
