"""The real HTTP API for tests: the App (SQLite file, debug MusicGen worker, delivery) with the
API frontend on 127.0.0.1:0 and the console frontend (where the first key comes from), driven
with httpx over the network."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.app import App, load_engines
from bot.config import ApiConfig, Config, LimitsConfig, RateLimit
from bot.core.models import Actor
from bot.platforms.console import ConsoleFrontend
from bot.platforms.web.server import ApiFrontend
from tests.core.conftest import make_config

_ENGINES: dict[tuple[str, ...], dict[str, Any]] = {}


def _load_engines_once(config: Config) -> dict[str, Any]:
    """The real debug model, loaded once per session (it is what every test renders with)."""
    key = (config.models.default, config.generation.device)
    if key not in _ENGINES:
        _ENGINES[key] = load_engines(config)
    return dict(_ENGINES[key])


def api_config(tmp_path: Path, **limits: Any) -> Config:
    """Debug model on CPU, 1–8 s tracks, the API on a free loopback port."""
    base = make_config(tmp_path)
    return dataclasses.replace(
        base,
        models=dataclasses.replace(base.models, default="debug"),
        generation=dataclasses.replace(base.generation, device="cpu", max_batch=4,
                                       progress_interval_s=0.05, poll_s=0.05),
        limits=LimitsConfig(**{"max_duration_s": 8.0, "max_queued_per_user": 20,
                               "max_queue": 100, "extend_seconds": 1.0,
                               "rate_limit": RateLimit(count=50, window_s=60), **limits}),
        economy=dataclasses.replace(base.economy, starting_balance=100),
        api=ApiConfig(enabled=True, host="127.0.0.1", port=0),
    )


@dataclass
class World:
    """A running server and the ways into it."""

    app: App
    api: ApiFrontend
    console: ConsoleFrontend
    url: str

    @property
    def service(self) -> Any:
        return self.app.service

    def client(self, key: str | None = None, **headers: str) -> httpx.AsyncClient:
        """An HTTP client for ``key`` (none: unauthenticated)."""
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60)

    async def key_for(self, actor: Actor, label: str = "") -> str:
        """A key as a chat frontend makes it for ``actor`` (its /apikey create)."""
        made = await self.service.apikeys.create(actor, label)
        return str(made.secret)

    async def balance(self, actor: Actor) -> int:
        return int(await self.service.balance(actor))

    async def ledger_rows(self) -> list[tuple[Any, ...]]:
        """Every ledger line (to prove a refusal wrote nothing)."""
        rows = await self.service.db.fetchall("SELECT * FROM ledger ORDER BY id")
        return [tuple(r) for r in rows]


async def open_world(config: Config, monkeypatch: pytest.MonkeyPatch,
                     *, worker: bool = True) -> World:
    monkeypatch.setattr("bot.app.load_engines", _load_engines_once)
    app = App(config)
    api = ApiFrontend(config, app.service)
    console = ConsoleFrontend(app.service)
    app.add_frontend(api)
    app.add_frontend(console)
    await app.start(worker=worker)
    return World(app, api, console, f"http://127.0.0.1:{api.port}")


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    world = await open_world(api_config(tmp_path), monkeypatch)
    try:
        yield world
    finally:
        await world.app.stop()


@pytest.fixture
async def idle_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    """No worker: jobs stay pending (for queue, cancel and refusal tests)."""
    world = await open_world(api_config(tmp_path), monkeypatch, worker=False)
    try:
        yield world
    finally:
        await world.app.stop()


OLGA = Actor("discord", "studio", "111", display_name="olga")
BOB = Actor("discord", "studio", "222", display_name="bob")
ADMIN = Actor("discord", "studio", "999", is_admin=True, display_name="dj")
BOB_ELSEWHERE = Actor("discord", "other", "222", display_name="bob")
