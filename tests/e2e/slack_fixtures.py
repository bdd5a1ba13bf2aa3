"""Wiring for the Slack end-to-end tests: the real App and SlackFrontend against FakeSlack.

Loading even the ``debug`` model takes seconds, so one :class:`bot.app.App` (SQLite store,
model, generation worker) serves the whole test module, while every test gets a fresh fake
Slack workspace with its own team id — balances, ledgers and queues are per workspace, so
tests cannot see each other's tokens — and a fresh SlackFrontend in Socket Mode or HTTP mode.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from bot.config import Config, load_config
from bot.core.errors import MusicBotError
from bot.core.models import Actor, Job, JobState
from bot.platforms.slack_bot import HTTP_PATH, SlackFrontend
from tests.fakes.slack_fake import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, Ack, FakeSlack
from tests.pg import test_database_for

MEMBER = "U0MEMBER"
OTHER = "U0OTHER"
ADMIN = "U0ADMIN"
USERS = (MEMBER, OTHER, ADMIN)
CHANNEL = "C0MUSIC"
PRIVATE = "G0SECRET"
STARTING_BALANCE = 100
_teams = itertools.count(1)


@dataclasses.dataclass
class SlackWorld:
    """One Slack workspace (fake) connected to the shared bot through a SlackFrontend."""

    fake: FakeSlack
    app: Any
    frontend: SlackFrontend
    mode: str

    @property
    def service(self) -> Any:
        return self.app.service

    def actor(self, user: str = MEMBER, *, admin: bool = False) -> Actor:
        return Actor("slack", self.fake.team_id, user, is_admin=admin)

    async def command(self, text: str, *, user: str = MEMBER, channel: str = CHANNEL) -> Ack:
        """A member types ``/music <text>``; returns Slack's view of the app's ack."""
        payload = self.fake.slash_command(text, user=user, channel=channel)
        return await self.fake.send(self.mode, "slash_commands", payload)

    async def click(self, action_id: str, *, user: str = MEMBER,
                    channel: str = CHANNEL) -> Ack:
        """A member clicks the button whose action id is ``action_id``."""
        payload = self.fake.block_action(action_id, user=user, channel=channel,
                                         value=action_id.rsplit(":", 1)[-1])
        return await self.fake.send(self.mode, "interactive", payload)

    async def balance(self, user: str = MEMBER) -> int:
        return await self.service.balance(self.actor(user))

    async def ledger(self, member: str | None = None) -> list[Any]:
        return await self.service.ledger(self.actor(ADMIN, admin=True), member, limit=200)

    async def jobs(self, user: str = MEMBER) -> list[Job]:
        """The member's jobs in this workspace, oldest first."""
        return list(reversed(await self.service.history(self.actor(user), limit=50)))

    async def wait_private(self, needle: str, user: str = MEMBER) -> str:
        """Wait for an ephemeral answer to ``user`` containing ``needle``; returns it."""
        def found() -> str | None:
            return next((t for t in self.fake.private_texts(user) if needle in t), None)

        return await self.fake.wait_for(found, timeout=15)

    async def wait_job(self, job_id: int, *states: JobState, timeout: float = 60) -> Job:
        """Poll the store until the job reaches one of ``states`` (default: any terminal)."""
        deadline = time.monotonic() + timeout
        while True:
            job = await self.service.get_job(job_id)
            if job.state in states if states else job.state.terminal:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} stuck in {job.state.value}")
            await asyncio.sleep(0.05)

    async def settle(self) -> None:
        """Cancel whatever this workspace left queued or running and wait for the refunds."""
        for user in USERS:
            for job in await self.jobs(user):
                if not job.state.terminal:
                    with suppress(MusicBotError):  # it may finish while we ask
                        await self.service.cancel(self.actor(user, admin=True), job.id)
                    await self.wait_job(job.id)


def make_config(tmp_path: Path, mode: str = "socket") -> Config:
    """Defaults plus the debug model, a temp store, the fake's tokens and a free HTTP port."""
    environ = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN,
               "SLACK_SIGNING_SECRET": SIGNING_SECRET}
    config = load_config(None, environ=environ, dotenv=None).with_model("debug")
    return dataclasses.replace(
        config,
        database=test_database_for(tmp_path, "musicbot.sqlite3"),
        data_dir=str(tmp_path / "data"),
        # random-initialised Demucs: stems are noise, but no download is attempted
        models=dataclasses.replace(config.models, stems="debug"),
        generation=dataclasses.replace(config.generation, device="cpu", max_attempts=1),
        audio=dataclasses.replace(config.audio, waveform=False),
        economy=dataclasses.replace(config.economy, starting_balance=STARTING_BALANCE),
        # a short Extend keeps the CPU test quick; the label shows whatever is configured
        limits=dataclasses.replace(config.limits, extend_seconds=2.0),
        slack=dataclasses.replace(config.slack, mode=mode, http_host="127.0.0.1", http_port=0,
                                  progress_edit_interval_s=1.0, admins=[]),
    )


@dataclasses.dataclass
class RunningBot:
    """The started App and the Config it was built from."""

    app: Any
    config: Config


@asynccontextmanager
async def running_app(tmp_path: Path) -> AsyncIterator[RunningBot]:
    """The real App (store, debug model, worker), started once for many workspaces."""
    from bot.app import App

    config = make_config(tmp_path)
    app = App(config)
    await app.start()
    try:
        yield RunningBot(app, config)
    finally:
        await app.stop()


@asynccontextmanager
async def open_world(bot: RunningBot, mode: str) -> AsyncIterator[SlackWorld]:
    """A fresh fake workspace and a SlackFrontend in ``mode`` registered with ``app``."""
    fake = FakeSlack(team_id=f"T{next(_teams):04d}")
    await fake.start()
    fake.add_user(MEMBER, "ann")
    fake.add_user(OTHER, "bob")
    fake.add_user(ADMIN, "chief", admin=True)
    fake.add_channel(CHANNEL, "music")
    config = dataclasses.replace(bot.config, slack=dataclasses.replace(bot.config.slack, mode=mode))
    frontend = SlackFrontend(config, bot.app.service, base_url=fake.api_url)
    bot.app.service.register_frontend(frontend)
    world = SlackWorld(fake, bot.app, frontend, mode)
    try:
        await frontend.start()
        if mode == "http":
            fake.request_url = f"http://127.0.0.1:{frontend.http_port}{HTTP_PATH}"
        yield world
    finally:
        try:
            await world.settle()
        finally:
            await frontend.stop()
            await fake.stop()
