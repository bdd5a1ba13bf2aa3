"""Fixtures for the core tests: a real MusicService on a real SQLite file in ``tmp_path``.

Nothing of ours is mocked. The only stand-in is :class:`RecordingFrontend`, a tiny chat
platform that implements :class:`bot.core.ports.Frontend` and remembers what members would
have seen. Invariants are checked with a separate plain ``sqlite3`` connection, i.e. from
the committed file, the way an operator with ``sqlite3 musicbot.sqlite3`` would see it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config, LimitsConfig, RateLimit, load_config
from bot.core.db import Database, is_postgres_url
from bot.core.errors import DeliveryError
from bot.core.models import (
    Actor,
    Destination,
    Job,
    JobEvent,
    MusicRequest,
    Receipt,
    Track,
)
from bot.core.service import MusicService
from tests import pg
from tests.pg import test_database_for

PLATFORM = "console"
GUILD = "guild-1"


class RecordingFrontend:
    """A real (if tiny) frontend: records events and deliveries, can refuse uploads."""

    platform = PLATFORM

    def __init__(self) -> None:
        self.events: list[JobEvent] = []
        self.delivered: dict[int, Track] = {}
        self.refuse_uploads = False

    async def notify(self, event: JobEvent) -> None:
        self.events.append(event)

    async def deliver(self, job: Job, track: Track) -> None:
        if self.refuse_uploads:
            raise DeliveryError("the file is too large for this channel", retryable=False)
        self.delivered[job.id] = track


class Clock:
    """An injectable clock that only moves when a test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    """Defaults with the database in ``tmp_path`` and limits wide open unless overridden.

    ``sections`` maps a config section name (``limits``, ``economy``...) to field overrides.
    """
    base = load_config(None, environ={}, dotenv=None)
    limits = LimitsConfig(
        max_duration_s=30.0, max_queued_per_user=10_000, max_queue=100_000,
        rate_limit=RateLimit(count=100_000, window_s=60.0),
    )
    economy = dataclasses.replace(base.economy, starting_balance=100)
    models = dataclasses.replace(base.models, default="small")
    config = dataclasses.replace(
        base, database=test_database_for(tmp_path), data_dir=str(tmp_path / "data"),
        limits=limits, economy=economy, models=models,
    )
    for name, fields in sections.items():
        config = dataclasses.replace(
            config, **{name: dataclasses.replace(getattr(config, name), **fields)})
    return config


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
def frontend() -> RecordingFrontend:
    return RecordingFrontend()


ServiceFactory = Callable[..., "asyncio.Future[MusicService]"]


@pytest.fixture
async def open_service(
    clock: Clock, frontend: RecordingFrontend
) -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``await open_service(config)`` → started service; all closed at teardown."""
    opened: list[MusicService] = []

    async def factory(config: Config, *, start: bool = True) -> MusicService:
        db = await Database(config.database_path).open()
        service = MusicService(config, db, clock=clock)
        service.register_frontend(frontend)
        opened.append(service)
        if start:
            await service.start()
        return service

    yield factory
    for service in opened:
        await service.drain_events()
        await service.db.close()


@pytest.fixture
async def service(open_service: Callable[..., Any], config: Config) -> MusicService:
    return await open_service(config)


def member(user: str = "alice", community: str = GUILD, admin: bool = False) -> Actor:
    return Actor(PLATFORM, community, user, is_admin=admin)


def destination(actor: Actor) -> Destination:
    return Destination(actor.platform, actor.community, "general", actor.user)


def music(prompt: str = "lofi beat", duration: Any = 5, **fields: Any) -> MusicRequest:
    """A /music request; default price is 10 tokens (the minimum)."""
    return MusicRequest(prompt=prompt, duration=duration, **fields)


_keys = iter(range(10**9))


async def order(
    service: MusicService, actor: Actor, request: MusicRequest | None = None,
    key: str | None = None,
) -> Receipt:
    """Request a track with a fresh idempotency key."""
    return await service.request_music(
        actor, request or music(), destination(actor), key or f"req-{next(_keys)}")


def track(tmp_path: Path, job: Job) -> Track:
    path = tmp_path / f"job-{job.id}.mp3"
    path.write_bytes(b"ID3")
    return Track(str(path), "mp3", job.params.duration, 3, 32_000)


# ----------------------------------------------------------------- reading the file directly


def raw(db_path: Path | str) -> Any:
    """A plain sqlite3 connection to the file: sees only what was committed (for a
    PostgreSQL URL, :class:`tests.pg.SyncPg`, which reads the same way)."""
    if is_postgres_url(db_path):
        return pg.SyncPg(str(db_path))
    if pg.database_of(Path(db_path).parent):  # a test naming tmp_path / "bot.sqlite3"
        return pg.SyncPg(pg.database_of(Path(db_path).parent))
    conn = sqlite3.connect(db_path, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def snapshot(db_path: Path | str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(ledger rows, account rows) to prove that a refused action changed nothing."""
    with raw(db_path) as conn:
        ledger = [tuple(r) for r in conn.execute("SELECT * FROM ledger ORDER BY id")]
        accounts = [tuple(r) for r in conn.execute("SELECT * FROM accounts ORDER BY id")]
    conn.close()
    return ledger, accounts


def assert_books_balance(db_path: Path | str) -> None:
    """The invariants a member would care about, checked on the committed file.

    - no balance is negative, and each equals the sum of its ledger entries;
    - every charge of a finished job is matched by exactly one outcome: a delivered track
      (``done``, no refund) or exactly one refund of the full price;
    - every ``balance_after`` chain is consistent (each entry = previous + delta).
    """
    conn = raw(db_path)
    try:
        for row in conn.execute(
            "SELECT a.id, a.balance, COALESCE(SUM(l.delta), 0) AS total "
            "FROM accounts a LEFT JOIN ledger l ON l.account_id = a.id GROUP BY a.id"
        ):
            assert row["balance"] >= 0, f"account {row['id']} is negative"
            assert row["balance"] == row["total"], f"account {row['id']} != its ledger"
        running: dict[int, int] = {}
        for row in conn.execute("SELECT * FROM ledger ORDER BY id"):
            previous = running.get(row["account_id"], 0)
            assert row["balance_after"] == previous + row["delta"], f"ledger {row['id']}"
            running[row["account_id"]] = row["balance_after"]
        for job in conn.execute("SELECT * FROM jobs"):
            charges = conn.execute(
                "SELECT SUM(-delta), COUNT(*) FROM ledger WHERE job_id = ? AND kind = 'charge'",
                (job["id"],)).fetchone()
            refunds = conn.execute(
                "SELECT SUM(delta), COUNT(*) FROM ledger WHERE job_id = ? AND kind = 'refund'",
                (job["id"],)).fetchone()
            assert charges[1] == 1 and charges[0] == job["price"], f"job {job['id']} charge"
            if job["state"] == "done":
                assert refunds[1] == 0, f"delivered job {job['id']} was refunded"
            elif job["state"] in ("failed", "cancelled"):
                assert refunds[1] == 1 and refunds[0] == job["price"], f"job {job['id']} refund"
            else:
                assert refunds[1] == 0, f"live job {job['id']} was refunded"
    finally:
        conn.close()


def ledger_rows(db_path: Path | str, where: str = "1", params: tuple[Any, ...] = ()) -> list[Any]:
    conn = raw(db_path)
    try:
        return list(conn.execute(f"SELECT * FROM ledger WHERE {where} ORDER BY id", params))
    finally:
        conn.close()


def job_row(db_path: Path | str, job_id: int) -> sqlite3.Row:
    conn = raw(db_path)
    try:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        assert row is not None
        return row
    finally:
        conn.close()


async def complete(service: MusicService, job: Job, made: Track) -> Job:
    """What the worker and the delivery stage do for a finished track: commit it as
    rendered, then deliver every due track. Returns the job as it is afterwards."""
    await service.settlement.rendered(job, made)
    await service.delivery.deliver_due()
    return await service.get_job(job.id)
