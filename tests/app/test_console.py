"""The console frontend with bad input: a clear message naming the field, never a traceback.

A real MusicService on a real SQLite file; no model is needed because every command here is
refused (or answered) before anything is queued.
"""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.core.db import Database
from bot.core.service import MusicService
from bot.platforms.console import CRASH_TEXT, ConsoleFrontend
from tests.core.conftest import make_config, snapshot


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[ConsoleFrontend]:
    config = make_config(tmp_path, models={"default": "debug"})
    async with Database(config.database_path) as db:
        service = MusicService(config, db)
        frontend = ConsoleFrontend(service, out=io.StringIO())
        service.register_frontend(frontend)
        yield frontend


@pytest.mark.parametrize(("line", "field"), [
    ("/music", "prompt"),
    ("/music duration:", "prompt"),
    ("/music duration:5", "prompt"),
    ("/music prompt: duration:5", "prompt"),
    ('/music prompt:"drums" duration:', "duration"),
    ('/music prompt:"drums"', "duration"),
    ('/music prompt:"drums" duration:abc', "duration"),
    ('/music prompt:"drums" duration:5 speed:3', "speed"),
    ('/music prompt:"drums" duration:5 duration:6', "duration"),
    ("/music drums prompt:bass duration:5", "prompt"),
    ('/music prompt:"drums" duration:5 temperature:9', "temperature"),
    ('/music prompt:"drums" duration:5 seed:-1', "seed"),
    ('/music prompt:"drums" duration:5 format:mp4', "format"),
    ("/price", "duration"),
    ("/price duration:abc", "duration"),
    ("/price duration:5 model:nope", "model"),
    ("/price duration:5 colour:red", "colour"),
    ("/extend", "job"),
    ("/reroll", "job"),
    ("/track", "job"),
    ("/track abc", "job"),
    ("/cancel 0", "job"),
    ("/tokens", "command"),
    ("/tokens grant", "member"),
    ("/tokens grant bob ten", "amount"),
])
async def test_bad_console_input_names_the_field_and_changes_nothing(
    console: ConsoleFrontend, line: str, field: str
) -> None:
    before = snapshot(console.service.config.database_path)
    result = await console.execute(line)
    assert not result.ok
    assert f"Invalid {field}" in result.text, result.text
    assert "Traceback" not in result.text
    assert snapshot(console.service.config.database_path) == before


@pytest.mark.parametrize("line", ['/music prompt:"unclosed', "/nosuch", "/../etc", "/ ", "🎵"])
async def test_junk_lines_are_answered_not_raised(console: ConsoleFrontend, line: str) -> None:
    result = await console.execute(line)
    assert not result.ok or result.text == ""
    assert "Traceback" not in result.text


async def test_an_unexpected_error_is_one_sentence_and_a_debug_traceback(
    console: ConsoleFrontend, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a bug anywhere below the console (here: the database is gone) must not end the REPL
    await console.service.db.close()
    caplog.set_level(logging.DEBUG, logger="bot.platforms.console")
    result = await console.execute("/balance")
    assert not result.ok and result.text == CRASH_TEXT
    assert any(r.exc_info for r in caplog.records if r.name == "bot.platforms.console")
    assert (await console.execute("/help")).ok  # and the next command still works
