"""Bad Discord options through the real discord.py client and the fake Discord.

Real Discord refuses values outside the synced schema before the bot sees them; the fake
does not, so these reach the bot as a forged or outdated client could send them. Each must
come back as an ephemeral message naming the option and its limit, leave no public trace,
log no traceback and leave the ledger unchanged. One bot serves all cases (starting one per
case would cost seconds each).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.core import limits as table
from tests.core.conftest import snapshot
from tests.e2e.discord_fixtures import DiscordWorld, open_world

MUSIC = {"prompt": "drums", "duration": 2.0}


def _cases() -> list[tuple[str, dict[str, Any], str, str]]:
    """(command, options, field named, limit named)."""
    cases: list[tuple[str, dict[str, Any], str, str]] = []
    for limit in table.MUSIC_NUMBERS:
        step = 1 if limit.integer else 0.01
        high = str(int(limit.high)) if float(limit.high).is_integer() else f"{limit.high:g}"
        for value in (limit.low - step, limit.high + step):
            value = int(value) if limit.integer else value
            cases.append(("music", {**MUSIC, limit.name: value}, limit.name, high))
    cases += [
        ("music", {**MUSIC, "duration": 0.5}, "duration", "30"),
        ("music", {**MUSIC, "duration": 999.0}, "duration", "30"),
        ("music", {**MUSIC, "genre": "x" * 41}, "genre", "40"),
        ("music", {**MUSIC, "prompt": "x" * 401}, "prompt", "400"),
        ("music", {**MUSIC, "prompt": "   "}, "prompt", "empty"),
        ("music", {**MUSIC, "model": "nope"}, "model", "choose one of"),
        ("music", {**MUSIC, "model": "<@123> @everyone"}, "model", "choose one of"),
        ("price", {"duration": 0.5}, "duration", "30"),
        ("price", {"duration": 2.0, "model": "nope"}, "model", "choose one of"),
        ("cancel", {"job": 0}, "job", str(2**63 - 1)),
        ("track", {"job": -4}, "job", str(2**63 - 1)),
    ]
    return cases


DISCORD_CASES = _cases()
ADMIN_CASES = [("tokens grant", 0), ("tokens grant", 10**10), ("tokens take", -5),
               ("tokens set", -1), ("tokens set", 10**10)]


@pytest.fixture
async def world(tmp_path, monkeypatch) -> AsyncIterator[DiscordWorld]:
    async with open_world(tmp_path, monkeypatch) as w:
        yield w


async def test_bad_discord_options_are_refused_privately_naming_the_limit(
    world: DiscordWorld, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await world.say("balance")  # bob has an account: "unchanged" means something
    db = world.config.database_path
    problems = []
    cases = [*DISCORD_CASES,
             *((cmd, {"member": world.bob, "amount": n}, "amount", "1000000000")
               for cmd, n in ADMIN_CASES)]
    for command, options, field, hint in cases:
        before = snapshot(db)
        user = world.olga if command.startswith("tokens") else world.bob
        it = await world.fake.slash(command, options, user=user, guild=world.studio)
        answer = await it.wait_message(lambda m: m.ephemeral)
        if not (f"Invalid {field}" in answer.content and hint in answer.content):
            problems.append((command, options, answer.content))
        if any(not m.ephemeral and not m.deleted for m in it.messages()):
            problems.append((command, options, "left a public message"))
        if answer.notified():
            problems.append((command, options, f"notified {answer.notified()}"))
        if snapshot(db) != before:
            problems.append((command, options, "changed the ledger"))
    assert problems == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
