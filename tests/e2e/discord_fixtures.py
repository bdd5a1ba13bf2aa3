"""Wiring for the Discord end-to-end tests: the real App and DiscordFrontend against FakeDiscord.

``open_world`` starts the fake Discord (two servers and a few members), the musicbot App
(SQLite store, ``debug`` model, generation worker) and the Discord frontend, and hands the
test a :class:`DiscordWorld` to act as members would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, load_engines
from bot.config import Config, load_config
from bot.platforms.discord_bot import DiscordFrontend
from tests.fakes.discord_fake import FakeDiscord, FakeGuild, FakeInteraction, FakeMessage, FakeUser
from tests.pg import test_database_for

STARTING_BALANCE = 200
ADMIN_ROLE = "DJ"


class Clock:
    """Wall clock the test can move forward (the frontend's notion of token expiry)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclasses.dataclass
class DiscordWorld:
    """A running bot plus the fake Discord it talks to.

    Members: ``olga`` owns ``studio`` (Manage Server); ``dj`` has the admin role there;
    ``bob`` is a plain member of ``studio`` and of ``other``, which ``eve`` owns; ``olga``
    is a plain member of ``other``.
    """

    fake: FakeDiscord
    config: Config
    clock: Clock
    app: Any
    frontend: DiscordFrontend
    studio: FakeGuild
    other: FakeGuild
    olga: FakeUser
    bob: FakeUser
    dj: FakeUser
    eve: FakeUser

    @property
    def service(self) -> Any:
        return self.app.service

    async def music(self, prompt: str = "calm piano", duration: float = 2.0, *,
                    user: FakeUser | None = None, guild: FakeGuild | bool | None = True,
                    **options: Any) -> FakeInteraction:
        """``/music`` in ``studio`` (or ``guild``; ``None`` means a DM)."""
        where = self.studio if guild is True else guild
        limit = options.pop("upload_limit", 10 * 1024 * 1024)
        return await self.fake.slash("music", {"prompt": prompt, "duration": duration,
                                               **options},
                                     user=user or self.bob, guild=where or None,
                                     upload_limit=limit)

    async def say(self, command: str, options: dict[str, Any] | None = None, *,
                  user: FakeUser | None = None, guild: FakeGuild | bool | None = True) -> str:
        """Run a command and return the text of its (first visible) answer."""
        where = self.studio if guild is True else guild
        it = await self.fake.slash(command, options, user=user or self.bob, guild=where or None)
        return (await it.wait_message()).content

    async def result(self, job_id: int, timeout: float = 120) -> FakeMessage:
        """The message that carries job ``job_id``'s track."""
        return await self.fake.wait_message(
            lambda m: f"Job #{job_id} for" in m.content and bool(m.uploads), timeout)

    async def restart(self, config: Config | None = None) -> None:
        """Stop the App (and its frontend), then start fresh ones on the same database."""
        await self.app.stop()
        self.config = config or self.config
        self.app, self.frontend = await _start_bot(self.config, self.clock, self.fake)


def make_config(tmp_path: Path, fake: FakeDiscord) -> Config:
    """Defaults plus the debug model, a temp store and the fake token; global command sync
    (guild-synced commands would not exist in DMs)."""
    config = load_config(None, environ={"DISCORD_TOKEN": fake.valid_token},
                         dotenv=None).with_model("debug")
    return dataclasses.replace(
        config,
        database=test_database_for(tmp_path, "musicbot.sqlite3"),
        data_dir=str(tmp_path / "data"),
        # random-initialised Demucs: stems are noise, but no download is attempted
        models=dataclasses.replace(config.models, stems="debug"),
        generation=dataclasses.replace(config.generation, device="cpu", max_attempts=1,
                                       progress_interval_s=0.05),
        economy=dataclasses.replace(config.economy, starting_balance=STARTING_BALANCE),
        discord=dataclasses.replace(config.discord, admin_role=ADMIN_ROLE,
                                    progress_edit_interval_s=1.0),
    )


_ENGINES: dict[tuple[str, ...], dict[str, Any]] = {}


def _load_engines_once(config: Config) -> dict[str, Any]:
    """bot.app.load_engines, memoised: the real debug model, loaded once per test session.

    Loading it takes 1 s on an idle machine and over 10 s on a busy one; every test here
    starts an App (twice for a restart), so loading it each time would dominate the file.
    """
    key = (config.models.default, *config.models.preload, config.generation.device)
    if key not in _ENGINES:
        _ENGINES[key] = load_engines(config)  # the original, imported before any patching
    return dict(_ENGINES[key])


async def _start_bot(config: Config, clock: Clock, fake: FakeDiscord) -> tuple[Any, Any]:
    """Wire it as production does: the App starts and stops its frontends."""
    app = App(config)
    # READY waits guild_ready_timeout for late GUILD_CREATEs; the fake sends them at once.
    frontend = DiscordFrontend(config, app.service, clock=clock,
                               client_options={"guild_ready_timeout": 0.05})
    app.add_frontend(frontend)
    identified = fake.identify_count
    await app.start()
    try:
        await fake.wait_identified(identified + 1)
    except BaseException:
        await app.stop()
        raise
    return app, frontend


@asynccontextmanager
async def open_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[DiscordWorld]:
    """Start the fake Discord, the App and the Discord frontend; stop them all afterwards."""
    monkeypatch.setattr("bot.app.load_engines", _load_engines_once)
    fake = FakeDiscord()
    await fake.start()
    fake.install(monkeypatch)
    olga, bob, dj, eve = (fake.add_user(n) for n in ("olga", "bob", "dj", "eve"))
    studio = fake.add_guild("studio", olga, roles=(ADMIN_ROLE,))
    other = fake.add_guild("other", eve)
    fake.add_member(studio, bob)
    fake.add_member(studio, dj, roles=(ADMIN_ROLE,))
    fake.add_member(other, bob)
    fake.add_member(other, olga)
    config = make_config(tmp_path, fake)
    clock = Clock()
    try:
        app, frontend = await _start_bot(config, clock, fake)
        world = DiscordWorld(fake, config, clock, app, frontend, studio, other, olga, bob, dj,
                             eve)
        try:
            yield world
        finally:
            await finish_within("App.stop()", world.app.stop())
    finally:
        await finish_within("the fake Discord's stop()", fake.stop())


STOP_LIMIT_S = 60.0
"""Stopping takes about a second; past this, a stop that hangs fails with every task's stack."""


async def finish_within(what: str, stopping: Awaitable[None]) -> None:
    """Await ``stopping``; if it hangs, fail naming every pending task and where it waits.

    A stop that never returned once stalled a whole PostgreSQL pass (seen twice, not yet
    understood): this turns it into a failure that says which await it was.
    """
    task = asyncio.ensure_future(stopping)
    done, _ = await asyncio.wait({task}, timeout=STOP_LIMIT_S)
    if task in done:
        task.result()
        return
    stacks = io.StringIO()
    for pending in asyncio.all_tasks():
        if pending is not asyncio.current_task():
            pending.print_stack(file=stacks)
    pytest.fail(f"{what} did not finish in {STOP_LIMIT_S:.0f} s; pending tasks:\n"
                f"{stacks.getvalue()}")
