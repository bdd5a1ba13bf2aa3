"""One limits table, every frontend: a value is accepted by one exactly when it is by all.

Parametrised over :mod:`bot.core.limits` (and the config-driven duration and prompt limits):
for each option, values at and just past each bound go through the core's validation, the
Discord option schema the bot syncs (what Discord itself enforces), the Slack parser followed
by the core, and the console.
"""

from __future__ import annotations

from typing import Any

import discord
import pytest
from discord import app_commands

from bot.config import Config
from bot.core import limits as table
from bot.core.errors import InvalidRequest
from bot.core.limits import NumberLimit
from bot.core.models import MusicRequest
from bot.core.requests import validate_request
from bot.platforms.console import ConsoleFrontend
from bot.platforms.discord_bot import DiscordFrontend
from bot.platforms.discord_commands import build_commands
from bot.platforms.slack_parse import UsageError, parse_command

# Discord's and Slack's names for a MusicRequest field
DISCORD_OPTION = {"cfg": "cfg"}
SLACK_FLAG = {"top_k": "top-k", "top_p": "top-p"}


def _probes(limit: NumberLimit) -> list[Any]:
    step = 1 if limit.integer else 0.01
    values: list[Any] = [limit.low, limit.high, limit.low - step, limit.high + step]
    if limit.integer:
        values.append(limit.low + 0.5)  # not a whole number
    return [int(v) if isinstance(v, float) and v.is_integer() and limit.integer else v
            for v in values]


NUMBER_CASES = [(limit.name, value) for limit in table.MUSIC_NUMBERS for value in _probes(limit)]


def music_schema(config: Config) -> dict[str, dict[str, Any]]:
    """The /music options exactly as the bot would sync them to Discord."""
    frontend = DiscordFrontend(config, service=None)  # type: ignore[arg-type]
    intents = discord.Intents.none()
    intents.guilds = True  # as the bot runs (keeps discord.py from warning)
    tree = app_commands.CommandTree(discord.Client(intents=intents))
    [music] = [c for c in build_commands(frontend) if c.name == "music"]
    return {o["name"]: o for o in music.to_dict(tree)["options"]}


def discord_accepts(option: dict[str, Any], value: Any) -> bool:
    """Discord's own checks on an option value, before the bot ever sees it."""
    if option["type"] == 4 and not float(value).is_integer():
        return False
    if option["type"] == 3:
        return option.get("min_length", 0) <= len(value) <= option.get("max_length", 6000)
    return option.get("min_value", -2**53) <= value <= option.get("max_value", 2**53)


def core_accepts(config: Config, **fields: Any) -> bool:
    request = {"prompt": "drums", "duration": 5, **fields}
    try:
        validate_request(config, MusicRequest(**request))
    except InvalidRequest:
        return False
    return True


def slack_accepts(config: Config, flag: str, value: Any) -> bool:
    base = "drums" if flag == "duration" else "drums --duration 5"
    try:
        command = parse_command(f"{base} --{flag} {value}")
    except UsageError:
        return False
    assert command.command == "music"
    try:
        validate_request(config, command.request)
    except InvalidRequest:
        return False
    return True


async def console_accepts(console: ConsoleFrontend, field: str, value: Any) -> bool:
    extra = f"{field}:{value}" if field != "duration" else ""
    duration = value if field == "duration" else 5
    result = await console.execute(f'/music prompt:"drums" duration:{duration} {extra}')
    return result.ok


@pytest.mark.parametrize(("field", "value"), NUMBER_CASES)
async def test_every_frontend_draws_the_line_where_the_core_does(
    config: Config, console: ConsoleFrontend, field: str, value: Any
) -> None:
    core = core_accepts(config, **{field: value})
    option = music_schema(config)[DISCORD_OPTION.get(field, field)]
    assert discord_accepts(option, value) == core, (field, value, option)
    assert slack_accepts(config, SLACK_FLAG.get(field, field), value) == core
    assert await console_accepts(console, field, value) == core


@pytest.mark.parametrize("offset", [0, 0.1, -0.1])
@pytest.mark.parametrize("bound", ["low", "high"])
async def test_duration_limits_agree(config: Config, console: ConsoleFrontend, bound: str,
                                     offset: float) -> None:
    low, high = table.duration_range(config, config.models.default)
    value = round((low if bound == "low" else high) + offset, 1)
    core = core_accepts(config, duration=value)
    assert discord_accepts(music_schema(config)["duration"], value) == core
    assert slack_accepts(config, "duration", value) == core
    assert await console_accepts(console, "duration", value) == core


@pytest.mark.parametrize(("field", "length"), [
    ("genre", table.GENRE.max_chars), ("genre", table.GENRE.max_chars + 1),
    ("prompt", None), ("prompt", 1),
])
def test_text_lengths_agree(config: Config, field: str, length: int | None) -> None:
    if length is None:  # the prompt limit comes from the config
        length = table.prompt_chars(config) + 1
    text = "a" * length
    core = core_accepts(config, **{field: text})
    assert discord_accepts(music_schema(config)[field], text) == core


def test_format_choices_are_the_core_formats(config: Config) -> None:
    choices = [c["value"] for c in music_schema(config)["format"]["choices"]]
    assert choices == list(table.FORMAT_CHOICES)
    assert all(core_accepts(config, format=f) for f in choices)
    assert not core_accepts(config, format="mp4")
