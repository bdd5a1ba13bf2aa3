"""Every entry point goes through the composition root (bot/app.py) for the store and models.

An operator running `musicbot admin`, `generate`, `doctor` or `db upgrade` gets the same
database set-up and the same model loading as `musicbot run` (one place to change them).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bot.app import App, open_database
from bot.core.db import LATEST_VERSION
from bot.core.models import Actor
from tests.core.conftest import make_config

ROOT = Path(__file__).resolve().parents[2]
BUILT_BY_THE_APP = {"Database", "MusicService", "Engine.load"}


def _calls(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            names.add(ast.unparse(node.func))
    return names


@pytest.mark.parametrize("entry_point", ["bot/cli.py", "bot/doctor.py"])
def test_entry_points_build_no_store_or_engine_by_hand(entry_point: str) -> None:
    assert not _calls(ROOT / entry_point) & BUILT_BY_THE_APP


async def test_the_store_keeps_what_a_command_changed(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    operator = Actor("discord", "guild-1", "shell:root", is_admin=True, operator=True)
    async with App.store(config) as service:
        await service.adjust_balance(operator, "grant", "42", "50", "contest")
    async with App.store(config) as service:
        balance = await service.balance(operator, "42")
    assert balance == config.economy.starting_balance + 50


async def test_doctor_looks_at_the_schema_and_the_store_upgrades_it(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with open_database(config, migrate=False) as db:
        assert await db.version() == 0  # what doctor reports: nothing changed by looking
    async with App.store(config) as service:
        assert await service.db.version() == LATEST_VERSION
