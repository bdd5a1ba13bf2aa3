"""The command catalogue drives every frontend: same commands, same options, same lines.

Parametrised over :mod:`bot.core.catalogue`: each command exists on every frontend that
declares it, with the catalogue's options (Discord's synced schema, the Slack help, the
console, ``musicbot generate``); and for every bounded option of every command, values at
and just past each bound are accepted by the core exactly when Discord's schema, the Slack
parser and the console accept them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import discord
import pytest
from discord import app_commands

from bot.cli import add_generate_arguments, generate_request
from bot.config import Config
from bot.core import catalogue
from bot.core.catalogue import Kind, Option
from bot.core.errors import InvalidRequest
from bot.core.limits import LABEL, REASON, NumberLimit, TextLimit
from bot.core.models import MusicRequest
from bot.core.requests import (
    validate_amount,
    validate_job_id,
    validate_request,
    validate_text,
)
from bot.core.service import MusicService
from bot.platforms import discord_commands, render
from bot.platforms.console import ConsoleFrontend
from bot.platforms.discord_bot import DiscordFrontend
from bot.platforms.slack_parse import HELP, UsageError, parse_command, usage_of
from tests.bad_input.test_limits_parity import discord_accepts
from tests.core.conftest import make_config

DISCORD_TYPES = {Kind.TEXT: 3, Kind.CHOICE: 3, Kind.MODEL: 3, Kind.INTEGER: 4, Kind.JOB: 4,
                 Kind.MEMBER: 6, Kind.NUMBER: 10, Kind.ATTACHMENT: 11}


def discord_schema(config: Config) -> dict[str, dict[str, Any]]:
    """Every command as the bot syncs it, by qualified name (``tokens grant``)."""
    intents = discord.Intents.none()
    intents.guilds = True
    tree = app_commands.CommandTree(discord.Client(intents=intents))
    schema: dict[str, dict[str, Any]] = {}
    frontend = DiscordFrontend(config, service=None)  # type: ignore[arg-type]
    for built in discord_commands.build_commands(frontend):
        data = built.to_dict(tree)
        if isinstance(built, app_commands.Group):
            for sub in data["options"]:
                schema[f"{built.name} {sub['name']}"] = sub
        else:
            schema[built.name] = data
    return schema


def test_discord_offers_every_catalogue_command_with_its_options(config: Config) -> None:
    schema = discord_schema(config)
    expected = [c for c in catalogue.COMMANDS if c.on("discord")]
    assert set(schema) == {c.qualified_name for c in expected}
    assert set(discord_commands.HANDLERS) == set(schema)
    for entry in expected:
        options = {o["name"]: o for o in schema[entry.qualified_name].get("options", [])}
        assert list(options) == [o.name for o in sorted(entry.options,
                                                         key=lambda o: not o.required)]
        for option in entry.options:
            synced = options[option.name]
            assert synced["type"] == DISCORD_TYPES[option.kind], option
            assert synced.get("required", False) == option.required, option
            assert synced["description"] == option.description
            assert len(option.description) <= 100
            assert [c["value"] for c in synced.get("choices", [])] == list(option.choices)
            assert synced.get("autocomplete", False) == (option.kind is Kind.MODEL)


def test_admin_commands_are_hidden_from_members_on_discord(config: Config) -> None:
    frontend = DiscordFrontend(config, service=None)  # type: ignore[arg-type]
    groups = [c for c in discord_commands.build_commands(frontend)
              if isinstance(c, app_commands.Group)]
    for group in groups:
        assert catalogue.group(group.name).access is catalogue.Access.ADMIN
        assert group.default_permissions == discord.Permissions(manage_guild=True)


@pytest.mark.parametrize("entry", [c for c in catalogue.COMMANDS if c.on("slack")],
                         ids=lambda c: c.qualified_name)
def test_slack_help_lists_every_command_and_parses_its_example(entry: catalogue.Command) -> None:
    usage = usage_of(entry)
    assert f"`{usage}`" in HELP or usage in HELP
    words = []
    for option in entry.options:
        if option.required or option.positional:
            value = "<@U0ANN>" if option.kind is Kind.MEMBER else option.example
            words.append(value if option.positional else f"--{option.flag} {value}")
    head = "admin " + entry.name if entry.group else ("" if entry.name == "music" else
                                                      entry.name)
    text = " ".join([head, *words]).strip()
    assert parse_command(text).command == entry.qualified_name, text


@pytest.mark.parametrize("frontend", ["discord", "console"])
def test_help_is_generated_for_every_command(config: Config, frontend: str) -> None:
    text = render.help_text(config, frontend)
    for entry in catalogue.COMMANDS:
        assert (f"**/{entry.qualified_name}**" in text) == entry.on(frontend)


async def test_console_has_every_catalogue_command(console: ConsoleFrontend) -> None:
    for entry in catalogue.COMMANDS:
        if entry.on("console"):
            assert hasattr(console, "_cmd_" + entry.qualified_name.replace(" ", "_")), entry


def test_generate_has_every_music_option() -> None:
    parser = argparse.ArgumentParser()
    add_generate_arguments(parser)
    music = catalogue.command("music")
    args = ["drums"]
    for option in music.options:
        if not option.positional:
            args += [f"--{option.flag}", option.example]
    request = generate_request(parser.parse_args(args), "mp3")
    for option in music.options:
        if option.name not in ("model", "format"):  # --model becomes models.default
            expected = "drums" if option.positional else option.example
            assert getattr(request, option.name) == expected, option


# ------------------------------------------------------------------- every bound, every frontend

def _probes(bound: NumberLimit | TextLimit) -> list[Any]:
    if isinstance(bound, TextLimit):
        return ["a" * bound.max_chars, "a" * (bound.max_chars + 1)]
    step = 1 if bound.integer else 0.01
    values: list[Any] = [bound.low, bound.high, bound.low - step, bound.high + step]
    if bound.integer:
        values.append(bound.low + 0.5)
    return [int(v) if bound.integer and float(v).is_integer() else round(v, 2) for v in values]


def _bounded(config: Config) -> list[tuple[catalogue.Command, Option, Any]]:
    cases = []
    for entry in catalogue.COMMANDS:
        for option in entry.options:
            bound = option.bounds(config)
            if bound is None:
                continue
            probes = _probes(bound)
            if option.kind is Kind.JOB:  # Discord cannot carry the top (2**63 - 1) at all
                probes = [int(bound.low), int(bound.low) - 1]  # type: ignore[union-attr]
            cases += [(entry, option, v) for v in probes]
    return cases


def _case_id(case: Any) -> str:
    return f"{case[0].qualified_name}-{case[1].name}-{str(case[2])[:12]}"


# The cases are listed before any fixture exists; bounds come from the same test config (its
# folder is never touched: building a Config does no I/O).
BOUND_CASES = _bounded(make_config(Path("/nonexistent"), models={"default": "debug"}))
CASE_IDS = [_case_id(c.values[0] if hasattr(c, "values") else c) for c in BOUND_CASES]
BASE = {"music": {"prompt": "drums", "duration": 5}, "price": {"duration": 5}}


def core_accepts(service: MusicService, entry: catalogue.Command, name: str, value: Any) -> bool:
    try:
        if entry.name in ("music", "batch"):  # a batch validates each prompt as a /music
            validate_request(service.config, MusicRequest(**{**BASE["music"], name: value}))
        elif entry.name == "price":
            service.price(**{**BASE["price"], name: value})
        elif name == "amount":
            validate_amount(value, allow_zero=entry.name == "set")
        elif name == "reason":
            validate_text(service.config, "reason", value, REASON.max_chars)
        elif name == "label":
            validate_text(service.config, "label", value, LABEL.max_chars)
        else:
            validate_job_id(value)
    except InvalidRequest:
        return False
    return True


def slack_text(entry: catalogue.Command, option: Option, value: Any) -> str:
    if entry.group:
        values = {"member": "<@U0BOB>", "amount": "5", "reason": "why", option.name: value}
        return f"admin {entry.name} " + " ".join(str(values[o.name]) for o in entry.options)
    base = {"music": "drums --duration 5", "price": "price 5",
            "apikey": "apikey revoke" if option.name == "key" else "apikey create",
            "batch": "batch drums --duration 5"}.get(entry.name, entry.name)
    if option.name == "duration":
        base = base.replace(" --duration 5", "").replace(" 5", "")
    if option.positional and option.name != "prompt":
        return f"{base} {value}"
    if option.name == "prompt":
        return f"{value} --duration 5"
    return f"{base} --{option.flag} {value}"


def slack_accepts(service: MusicService, entry: catalogue.Command, option: Option,
                  value: Any) -> bool:
    try:
        parsed = parse_command(slack_text(entry, option, value))
    except UsageError:
        return False
    if parsed.command != entry.qualified_name:
        return False  # "cancel -1" does not fit /cancel's shape: it is read as a prompt
    return core_accepts(service, entry, option.name, parsed.values[option.name])


def console_line(entry: catalogue.Command, option: Option, value: Any) -> str:
    base = {"music": {"prompt": '"drums"', "duration": "5"}, "price": {"duration": "5"},
            "cancel": {}, "track": {}, "reroll": {}, "extend": {}, "share": {},
            "unshare": {}, "stems": {},
            "apikey": {"action": "revoke" if option.name == "key" else "create"}}.get(
        entry.name, {"member": "bob", "amount": "5"})
    fields = {**base, option.name: f'"{value}"' if isinstance(value, str) else value}
    return f"/{entry.qualified_name} " + " ".join(f"{k}:{v}" for k, v in fields.items())


@pytest.mark.parametrize("case", BOUND_CASES, ids=CASE_IDS)
async def test_every_bound_of_every_option_is_drawn_alike(
    config: Config, console: ConsoleFrontend, case: tuple[catalogue.Command, Option, Any]
) -> None:
    entry, option, value = case
    core = core_accepts(console.service, entry, option.name, value)
    if entry.on("discord"):
        synced = discord_schema(config)[entry.qualified_name]
        discord_option = next(o for o in synced["options"] if o["name"] == option.name)
        assert discord_accepts(discord_option, value) == core, (discord_option, value)
    if entry.on("slack"):
        assert slack_accepts(console.service, entry, option, value) == core
    if entry.on("console"):
        assert await console_accepts(console, entry, option, value) == core, value
    if entry.name == "music":
        assert cli_accepts(console.service, option, value) == core


async def console_accepts(console: ConsoleFrontend, entry: catalogue.Command, option: Option,
                          value: Any) -> bool:
    result = await console.execute(console_line(entry, option, value))
    if entry.name in ("music", "price"):
        return result.ok
    # a value in range may still be refused for another reason (bob's balance, no such
    # job): only a refusal of the value itself counts
    return result.ok or f"Invalid {option.name}: must" not in result.text


def cli_accepts(service: MusicService, option: Option, value: Any) -> bool:
    """``musicbot generate``'s arguments, validated as the command validates them."""
    parser = argparse.ArgumentParser()
    add_generate_arguments(parser)
    fields = {"duration": "5", option.name: str(value)}
    args = [fields.pop("prompt", "drums")]
    for name, text in fields.items():
        args.append(f"--{name.replace('_', '-')}={text}")
    try:
        validate_request(service.config, generate_request(parser.parse_args(args), None))
    except InvalidRequest:
        return False
    return True
