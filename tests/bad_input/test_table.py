"""The bad-input table: core validation, console, Slack parser and config files.

Every case must be refused with a message that names the field (or option, or config key)
and the limit or rule it broke; no traceback reaches the member; the ledger and the
accounts are byte-for-byte what they were. Discord options and the CLIs have their own
files (they need the fake Discord or subprocesses).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from bot.config import load_config
from bot.core import limits as table
from bot.core.errors import ConfigError, InvalidRequest, MusicBotError
from bot.core.limits import NumberLimit
from bot.core.models import Actor, Destination, MusicRequest
from bot.core.requests import validate_request
from bot.core.service import MusicService
from bot.platforms.console import ConsoleFrontend
from bot.platforms.slack_parse import UsageError, parse_command
from tests.core.conftest import snapshot

JOB_MAX = str(2**63 - 1)
MEMBER = Actor("console", "local", "alice")
ADMIN = Actor("console", "local", "root", is_admin=True)


def _show(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def _range_hint(limit: NumberLimit) -> str:
    return _show(limit.high)


def _bad_numbers(limit: NumberLimit) -> list[Any]:
    step = 1 if limit.integer else 0.01
    values: list[Any] = [limit.low - step, limit.high + step, "abc", "nan", "inf", "-inf",
                         "1e999", True, [1], {"v": 1}, math.nan, "½"]
    if limit.integer:
        values.append(limit.low + 0.5)
    return values


# ----------------------------------------------------------------------------- the core

def _music_cases() -> list[tuple[str, dict[str, Any], str]]:
    """(field, request fields, text the message must contain besides the field)."""
    cases: list[tuple[str, dict[str, Any], str]] = []
    for prompt, hint in [("", "empty"), ("   \n ", "empty"), ("x" * 401, "at most 400 characters"),
                         ("a\x00b", "control"), ("zero\u200bwidth", "invisible"),
                         (None, "text of at most 400"), (42, "text of at most 400"),
                         (["a"], "text of at most 400")]:
        cases.append(("prompt", {"prompt": prompt}, hint))
    for duration in [0, 0.5, 31, -1, "abc", "nan", "inf", True, [5], "1e999", "31s",
                     "5 minutes", None, ""]:
        cases.append(("duration", {"duration": duration}, "30"))
    for limit in table.MUSIC_NUMBERS:
        for value in _bad_numbers(limit):
            cases.append((limit.name, {limit.name: value}, _range_hint(limit)))
    for genre, hint in [("x" * 41, "40"), ("a\x07b", "control"), (5, "40"), (["rock"], "40")]:
        cases.append(("genre", {"genre": genre}, hint))
    for model in ["nope", 5, "../../etc/passwd", "debug\x00"]:
        cases.append(("model", {"model": model}, "choose one of"))
    for fmt in ["mp4", "MP3X", 3, "exe"]:
        cases.append(("format", {"format": fmt}, "mp3, wav, flac, ogg"))
    return cases


MUSIC_CASES = _music_cases()


@pytest.mark.parametrize(("field", "fields", "hint"), MUSIC_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(MUSIC_CASES)])
async def test_core_refuses_bad_music_requests(service: MusicService, field: str,
                                               fields: dict[str, Any], hint: str) -> None:
    await service.balance(MEMBER)  # an account exists, so "unchanged" means something
    before = snapshot(service.config.database_path)
    request = MusicRequest(**{"prompt": "drums", "duration": 5, **fields})
    with pytest.raises(InvalidRequest) as caught:
        await service.request_music(MEMBER, request, _here(), "key-1")
    assert caught.value.field == field
    assert caught.value.user_message.startswith(f"Invalid {field}:")
    assert hint in caught.value.user_message, caught.value.user_message
    assert snapshot(service.config.database_path) == before


ADMIN_CASES = [
    (action, amount)
    for action in ("grant", "take", "set")
    for amount in (0, -1, table.AMOUNT.high + 1, "ten", "nan", 2.5, True, None, "1e999")
    if not (action == "set" and amount == 0)
]


@pytest.mark.parametrize(("action", "amount"), ADMIN_CASES)
async def test_core_refuses_bad_token_amounts(service: MusicService, action: str,
                                              amount: Any) -> None:
    await service.balance(ADMIN, "bob")
    before = snapshot(service.config.database_path)
    with pytest.raises(InvalidRequest) as caught:
        await service.adjust_balance(ADMIN, action, "bob", amount, "why")
    assert caught.value.field == "amount"
    assert "1000000000" in caught.value.user_message
    assert snapshot(service.config.database_path) == before


@pytest.mark.parametrize("member", ["", "a b", "x" * 65, "<@123>", 3.5, True, "ünï", "a\nb"])
async def test_core_refuses_bad_member_ids(service: MusicService, member: Any) -> None:
    before = snapshot(service.config.database_path)
    with pytest.raises(InvalidRequest) as caught:
        await service.adjust_balance(ADMIN, "grant", member, 5, "why")
    assert caught.value.field == "member" and "at most 64" in caught.value.user_message
    assert snapshot(service.config.database_path) == before


@pytest.mark.parametrize("job", [0, -1, "abc", 2**63, 1.5, "nan", True, "#x"])
@pytest.mark.parametrize("what", ["cancel", "stored_track"])
async def test_core_refuses_bad_job_numbers(service: MusicService, what: str, job: Any) -> None:
    await service.balance(MEMBER)
    before = snapshot(service.config.database_path)
    with pytest.raises(InvalidRequest) as caught:
        await getattr(service, what)(MEMBER, job)
    assert caught.value.field == "job" and str(2**63 - 1) in caught.value.user_message
    assert snapshot(service.config.database_path) == before


def _here() -> Destination:
    return Destination("console", "local", "terminal", MEMBER.user)


# ----------------------------------------------------------------------------- the console

def _console_cases() -> list[tuple[str, str, str]]:
    """(command line, field named, hint)."""
    music = '/music prompt:"drums" duration:5'
    cases = [
        ("/music", "prompt", "describe the music"),
        ("/music duration:", "prompt", "describe the music"),
        ("/music duration:5", "prompt", "describe the music"),
        ('/music prompt:"drums"', "duration", "1 to 30"),
        ('/music prompt:"drums" duration:', "duration", "1 to 30"),
        ('/music prompt:"drums" duration:0', "duration", "between 1 and 30"),
        ('/music prompt:"drums" duration:31', "duration", "between 1 and 30"),
        ('/music prompt:"drums" duration:abc', "duration", "1 to 30"),
        ('/music prompt:"drums" duration:-5', "duration", "between 1 and 30"),
        (f"{music} speed:3", "speed", "options:"),
        (f"{music} Speed:3", "speed", "options:"),
        (f"{music} duration:6", "duration", "twice"),
        ("/music drums prompt:bass duration:5", "prompt", "twice"),
        (f"{music} format:mp4", "format", "mp3, wav"),
        (f"{music} model:nope", "model", "choose one of"),
        (f'{music} genre:{"x" * 41}', "genre", "40"),
        ('/music prompt:"' + "x" * 401 + '" duration:5', "prompt", "400"),
        ("/price", "duration", "1 to 30"),
        ("/price duration:abc", "duration", "1 to 30"),
        ("/price duration:5 model:nope", "model", "choose one of"),
        ("/price duration:5 colour:red", "colour", "options:"),
        ("/price duration:5 format:mp4", "format", "mp3, wav"),
        ("/extend", "job", "missing"),
        ("/extend 0", "job", JOB_MAX),
        ("/reroll", "job", "missing"),
        ("/reroll x", "job", JOB_MAX),
        ("/track", "job", "missing"),
        ("/track abc", "job", JOB_MAX),
        ("/cancel 0", "job", JOB_MAX),
        ("/cancel -3", "job", JOB_MAX),
        ("/tokens", "command", "grant|take|set"),
        ("/tokens grant", "member", "missing"),
        ("/tokens give bob 5", "command", "grant|take|set"),
        ("/balance a\\ b", "member", "at most 64"),
    ]
    for limit in table.MUSIC_NUMBERS:
        step = 1 if limit.integer else 0.01
        for value in (limit.low - step, limit.high + step, "abc", "nan"):
            cases.append((f"{music} {limit.name}:{value}", limit.name, _range_hint(limit)))
    for action in ("grant", "take", "set"):
        for amount in ("-1", "ten"):
            cases.append((f"/tokens {action} bob {amount}", "amount", "1000000000"))
    return cases


CONSOLE_CASES = _console_cases()


@pytest.mark.parametrize(("line", "field", "hint"), CONSOLE_CASES,
                         ids=[f"console-{i}" for i in range(len(CONSOLE_CASES))])
async def test_console_refuses_with_the_field_and_the_limit(
    console: ConsoleFrontend, line: str, field: str, hint: str
) -> None:
    await console.service.balance(console.actor)
    before = snapshot(console.service.config.database_path)
    result = await console.execute(line)
    assert not result.ok
    assert f"Invalid {field}" in result.text and hint in result.text, result.text
    assert "Traceback" not in result.text
    assert snapshot(console.service.config.database_path) == before


# ----------------------------------------------------------------------------- Slack parser

SLACK_USAGE_CASES = [
    ("drums --speed 3", "`--speed`"), ("drums --duration", "`--duration` needs a value"),
    ("drums --seed --duration 5", "`--seed` needs a value"),
    ("drums --duration 5 --duration 6", "given twice"), ("drums —colour red", "—colour"),
    ("drums --top-k=", "top-k"), ("drums --d 5 --seconds 6", "given twice"),
    ("", "Tell me what to play"), ("   ", "Tell me what to play"),
    ("--duration 5", "prompt is empty"), ("--genre rock --duration 5", "prompt is empty"),
    ("track", "job number"),
    ("admin grant", "needs a member and an amount"),
    ("admin grant <@U0BOB>", "needs a member and an amount"),
    ("admin grant bob 5", "not a member mention"),
    ("admin grant <@U0BOB> ten", "not a whole number"),
    ("admin take <@U0BOB> 1.5", "not a whole number"),
    ("admin set @bob 5", "not a member mention"),
    ("admin ledger <@U0BOB> <@U0ANN>", "at most one member"),
]


@pytest.mark.parametrize(("text", "hint"), SLACK_USAGE_CASES)
def test_slack_parser_explains_malformed_commands(text: str, hint: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_command(text)
    assert hint in caught.value.message
    assert "*Usage:*" in caught.value.message  # the allowed shape, every time


def _slack_value_cases() -> list[tuple[str, str, str]]:
    cases = [("drums --duration 0", "duration", "between 1 and 30"),
             ("drums --duration 31s", "duration", "between 1 and 30"),
             ("drums --duration abc", "duration", "1 to 30"),
             ("drums --duration 5min", "duration", "1 to 30"),
             ("drums --duration 5 --format mp4", "format", "mp3, wav"),
             ("drums --duration 5 --format '<!here>'", "format", "mp3, wav"),
             ("drums --duration 5 --model nope", "model", "choose one of"),
             (f"drums --duration 5 --genre {'x' * 41}", "genre", "40")]
    flags = {"top_k": "top-k", "top_p": "top-p"}
    for limit in table.MUSIC_NUMBERS:
        step = 1 if limit.integer else 0.01
        for value in (limit.low - step, limit.high + step, "abc"):
            flag = flags.get(limit.name, limit.name)
            cases.append((f"drums --duration 5 --{flag} {value}", limit.name,
                          _range_hint(limit)))
    return cases


SLACK_VALUE_CASES = _slack_value_cases()


@pytest.mark.parametrize(("text", "field", "hint"), SLACK_VALUE_CASES)
def test_slack_values_are_refused_by_the_core_naming_the_field(
    config: Any, text: str, field: str, hint: str
) -> None:
    command = parse_command(text)
    assert command.command == "music"
    with pytest.raises(InvalidRequest) as caught:
        validate_request(config, command.request)
    assert caught.value.field == field and hint in caught.value.user_message


# ----------------------------------------------------------------------------- config files

CONFIG_CASES = [
    ("- economy\n- limits\n", "must be a mapping of sections"),
    ("42\n", "must be a mapping of sections"),
    ("just text\n", "must be a mapping of sections"),
    ("economy: [1, 2]\n", "economy"),
    ("generation:\n  job_timeout_s: .nan\n", "generation.job_timeout_s': must be a finite"),
    ("generation:\n  job_timeout_s: .inf\n", "generation.job_timeout_s': must be a finite"),
    ("audio:\n  target_lufs: -.inf\n", "audio.target_lufs': must be a finite"),
    ("limits:\n  max_duration_s: .nan\n", "limits.max_duration_s': must be a finite"),
    ("economy:\n  starting_balance: .inf\n", "economy.starting_balance': must be a finite"),
    ("generation:\n  max_batch: 2.5\n", "generation.max_batch': expected a whole number"),
    ("generation:\n  max_batch: 0\n", "generation.max_batch': must be at least 1"),
    ("generation:\n  max_batch: 65\n", "generation.max_batch': must be at most 64"),
    ("generation:\n  device: tpu\n", "generation.device': must be auto, cpu"),
    ("audio:\n  bitrate_kbps: 16\n", "audio.bitrate_kbps': must be 32..320"),
    ("audio:\n  bitrate_kbps: 400\n", "audio.bitrate_kbps': must be 32..320"),
    ("audio:\n  format: mp4\n", "audio.format': must be one of mp3"),
    ("audio:\n  fade_out_s: 11\n", "audio.fade_out_s': must be 0..10"),
    ("audio:\n  normalize: maybe\n", "audio.normalize': expected true or false"),
    ("limits:\n  max_prompt_chars: 0\n", "limits.max_prompt_chars': must be 1..2000"),
    ("limits:\n  max_duration_s: 301\n", "limits.max_duration_s': must be at most 300"),
    ("limits:\n  min_duration_s: 40\n", "limits.min_duration_s': must be positive and at most"),
    ("limits:\n  extend_seconds: 0.5\n", "limits.extend_seconds': must be between"),
    ("limits:\n  extend_seconds: 400\n", "limits.extend_seconds': must be between"),
    ("economy:\n  starting_balance: -1\n", "economy.starting_balance': must be 0 or more"),
    ("economy:\n  starting_balance: 2000000000\n",
     "economy.starting_balance': must be at most 1000000000"),
    ("economy:\n  daily_allowance: 1000000001\n",
     "economy.daily_allowance': must be at most 1000000000"),
    ("pricing:\n  default: {per_second: 1.0e+9}\n", "pricing.default.per_second"),
    ("pricing:\n  default: {minimum: 1000000001}\n", "pricing.default.minimum': must be at most"),
    ("slack:\n  mode: ftp\n", "slack.mode': must be socket or http"),
    ("slack:\n  http_port: 70000\n", "slack.http_port': must be 0..65535"),
    ("log_level: LOUD\n", "log_level': must be DEBUG, INFO"),
    ("economy:\n  startng_balance: 5\n", "economy.startng_balance': unknown setting"),
    ("discord_token: abc\n", "never the file"),
    ("generation:\n  max_batch: [1,\n", "not valid YAML (line 3)"),
]


@pytest.mark.parametrize(("text", "expected"), CONFIG_CASES)
def test_config_files_are_refused_naming_the_key(tmp_path: Path, text: str,
                                                 expected: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={}, dotenv=None)
    assert expected in caught.value.user_message, caught.value.user_message
    assert isinstance(caught.value, MusicBotError) and "Traceback" not in str(caught.value)


def test_the_table_has_at_least_300_cases() -> None:
    from tests.bad_input.test_cli_input import CLI_CASES
    from tests.bad_input.test_discord_options import DISCORD_CASES

    counts = {
        "core": len(MUSIC_CASES) + len(ADMIN_CASES) + 8 + 8 * 2,
        "console": len(CONSOLE_CASES),
        "slack": len(SLACK_USAGE_CASES) + len(SLACK_VALUE_CASES),
        "discord": len(DISCORD_CASES),
        "cli": len(CLI_CASES),
        "config": len(CONFIG_CASES),
    }
    assert sum(counts.values()) >= 300, counts
