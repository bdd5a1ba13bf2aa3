"""Fixtures for the bad-input table: a real MusicService on a SQLite file, the console on it.

No model is loaded: refused input never reaches the worker, and the few accepted requests
in the parity tests only wait in the queue.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.config import Config
from bot.core.db import Database
from bot.core.service import MusicService
from bot.platforms.console import ConsoleFrontend
from tests.core.conftest import make_config


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path, models={"default": "debug"},
                       economy={"starting_balance": 1_000_000})


@pytest.fixture
async def service(config: Config) -> AsyncIterator[MusicService]:
    async with Database(config.database_path) as db:
        yield MusicService(config, db)


@pytest.fixture
async def console(service: MusicService) -> ConsoleFrontend:
    frontend = ConsoleFrontend(service, out=io.StringIO())
    service.register_frontend(frontend)
    return frontend
