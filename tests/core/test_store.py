"""The SQLite file itself: transactions, the append-only ledger, schema migrations."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config
from bot.core.db import LATEST_VERSION, MIGRATIONS, Database, DatabaseBusy, DatabaseError
from bot.core.errors import InsufficientTokens, InvalidRequest
from bot.core.models import LedgerKind
from bot.core.service import MusicService

from .conftest import Clock, assert_books_balance, member, order, raw, snapshot


async def test_rolled_back_write_is_invisible_from_a_second_connection(
    service: MusicService,
) -> None:
    alice = member()
    await order(service, alice)
    db_path = service.config.database_path
    before = snapshot(db_path)

    with pytest.raises(RuntimeError):
        async with service.db.write() as conn:
            await conn.execute("UPDATE accounts SET balance = 0")
            await conn.execute(
                "INSERT INTO ledger (account_id, delta, balance_after, kind, actor, created_at) "
                "SELECT id, -balance, 0, 'take', 'x', 0 FROM accounts")
            # A reader in another process sees none of it while the transaction is open...
            assert snapshot(db_path) == before
            raise RuntimeError("the bot hit a bug half-way through")

    # ...nor after it rolled back, and the service's own reads agree.
    assert snapshot(db_path) == before
    assert await service.balance(alice) == 90
    assert_books_balance(db_path)


@pytest.mark.sqlite_only
async def test_uncommitted_write_is_invisible_to_the_service(service: MusicService) -> None:
    alice = member()
    await order(service, alice)
    other = sqlite3.connect(service.config.database_path, isolation_level=None, timeout=30)
    other.execute("BEGIN")
    other.execute("UPDATE accounts SET balance = balance + 500")

    try:
        row = await service.db.fetchone("SELECT balance FROM accounts")
        assert row is not None and row[0] == 90
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await service.balance(alice) == 90


@pytest.mark.parametrize("sql", [
    "UPDATE ledger SET delta = delta + 1000",
    "UPDATE ledger SET kind = 'grant'",
    "DELETE FROM ledger",
    "DELETE FROM ledger WHERE kind = 'charge'",
])
async def test_ledger_is_append_only(service: MusicService, sql: str) -> None:
    await order(service, member())
    db_path = service.config.database_path
    before = snapshot(db_path)
    conn = raw(db_path)

    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(sql)
    conn.close()

    assert snapshot(db_path) == before


@pytest.mark.parametrize("sql", [
    "UPDATE accounts SET balance = -1",
    "INSERT INTO ledger (account_id, delta, balance_after, kind, actor, created_at) "
    "VALUES (1, -500, -400, 'take', 'x', 0)",
    "INSERT INTO ledger (account_id, delta, balance_after, kind, job_id, actor, created_at) "
    "VALUES (1, -10, 80, 'charge', 1, 'x', 0)",  # a second charge for the same job
    "INSERT INTO ledger (account_id, delta, balance_after, kind, actor, created_at) "
    "VALUES (1, 5, 95, 'gift', 'x', 0)",
])
async def test_sql_level_guards_refuse_negative_balances_and_double_charges(
    service: MusicService, sql: str
) -> None:
    await order(service, member())
    db_path = service.config.database_path
    before = snapshot(db_path)
    conn = raw(db_path)

    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(sql)
    conn.close()

    assert snapshot(db_path) == before


async def test_second_refund_for_a_job_is_refused_by_the_database(service: MusicService) -> None:
    receipt = await order(service, member())
    await service.cancel(member(), receipt.job.id)
    conn = raw(service.config.database_path)

    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        conn.execute(
            "INSERT INTO ledger (account_id, delta, balance_after, kind, job_id, actor, "
            "created_at) VALUES (1, 10, 110, 'refund', ?, 'x', 0)", (receipt.job.id,))
    conn.close()


async def test_ledger_refuses_a_balance_above_the_maximum(service: MusicService) -> None:
    admin = member("mod", admin=True)
    await service.set_balance(admin, "alice", 1_000_000_000)
    before = snapshot(service.config.database_path)

    with pytest.raises(InvalidRequest, match="amount"):
        await service.grant(admin, "alice", 1)

    assert snapshot(service.config.database_path) == before


@pytest.mark.sqlite_only
async def test_fresh_file_gets_the_latest_schema(tmp_path: Path) -> None:
    db = await Database(tmp_path / "new.sqlite3").open()
    try:
        assert await db.version() == LATEST_VERSION
        tables = {r[0] for r in await db.fetchall("SELECT name FROM sqlite_master")}
        assert {"accounts", "jobs", "ledger", "settings", "schema_version"} <= tables
        mode = await db.fetchone("PRAGMA journal_mode")
        assert mode is not None and mode[0] == "wal"
    finally:
        await db.close()


@pytest.mark.sqlite_only
async def test_opening_twice_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    first = await Database(path).open()
    await first.close()
    schema = _schema(path)

    second = await Database(path).open()
    try:
        assert await second.upgrade() == []
        assert await second.version() == LATEST_VERSION
    finally:
        await second.close()
    assert _schema(path) == schema
    conn = raw(path)
    # one row per migration (numbers may have gaps while branches are apart)
    assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == len(MIGRATIONS)
    conn.close()


@pytest.mark.sqlite_only
async def test_file_from_a_newer_musicbot_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    db = await Database(path).open()
    await db.close()
    conn = raw(path)
    conn.execute("INSERT INTO schema_version VALUES (?, 'from the future', 0)",
                 (LATEST_VERSION + 1,))
    conn.commit()
    conn.close()
    schema = _schema(path)

    before = set(threading.enumerate())
    with pytest.raises(DatabaseError, match=r"newer than this musicbot.*Upgrade musicbot"):
        await Database(path).open()

    assert _schema(path) == schema
    # Nothing left running: a leaked connection thread would hang the bot instead of exiting.
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=5)
        assert not thread.is_alive(), thread.name


@pytest.mark.sqlite_only
async def test_unopenable_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "not-a-database.sqlite3"
    path.write_bytes(b"this is a text file, not SQLite" * 100)

    with pytest.raises(DatabaseError, match="Cannot open the database"):
        await Database(path).open()


async def test_ledger_entries_are_listed_newest_first(service: MusicService) -> None:
    alice, admin = member(), member("mod", admin=True)
    await order(service, alice)
    await service.grant(admin, "alice", 5, "contest winner")

    entries = await service.ledger(admin, "alice")

    assert [e.kind for e in entries] == [LedgerKind.GRANT, LedgerKind.CHARGE, LedgerKind.STARTING]
    assert [e.balance_after for e in entries] == [95, 90, 100]


def _schema(path: Path) -> list[Any]:
    conn = raw(path)
    try:
        return [tuple(r) for r in conn.execute("SELECT * FROM sqlite_master ORDER BY name")]
    finally:
        conn.close()


@pytest.mark.sqlite_only
async def test_committed_write_is_visible_at_once_while_other_tasks_read(
    tmp_path: Path,
) -> None:
    """Overlapping reads must not pin an old snapshot (/music then /cancel at once).

    Found by bench/ledger.py: a reader cursor left open across awaits kept its snapshot,
    other tasks' reads joined it and missed a job committed a moment earlier.
    """
    db = await Database(tmp_path / "bot.sqlite3").open()
    stop = asyncio.Event()

    async def browse() -> None:
        while not stop.is_set():
            await db.fetchall("SELECT * FROM settings")
            await db.fetchone("SELECT COUNT(*) FROM settings")

    browsers = [asyncio.create_task(browse()) for _ in range(20)]
    stale = 0
    try:
        for i in range(500):
            async with db.write() as conn:
                await conn.execute("INSERT INTO settings VALUES (?, 'v')", (f"k{i}",))
            if await db.fetchone("SELECT * FROM settings WHERE key = ?", (f"k{i}",)) is None:
                stale += 1
    finally:
        stop.set()
        await asyncio.gather(*browsers)
        await db.close()
    assert stale == 0


async def test_cancelled_requests_leave_the_store_working_and_consistent(
    service: MusicService,
) -> None:
    """A frontend task cancelled mid-write (timeout, shutdown) must not wedge the writer.

    Found by this test: a cancel landing while BEGIN IMMEDIATE was in flight left the
    connection inside a transaction, and every later write failed until a restart.
    """
    alice = member()
    for steps in range(40):  # cancel after 0, 1, 2... loop turns: every await in the path
        task = asyncio.create_task(order(service, alice, key=f"cancelled-{steps}"))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        # InsufficientTokens: on PostgreSQL a request can finish within those loop turns
        # (its round trips are socket reads the loop polls), so alice's tokens run out.
        with contextlib.suppress(asyncio.CancelledError, InsufficientTokens):
            await task
        assert (await order(service, member("bob"))).price == 10  # the next write works
        await service.set_balance(member("mod", admin=True), "bob", 100)
    assert_books_balance(service.config.database_path)


@pytest.mark.sqlite_only
async def test_a_database_locked_by_another_process_says_busy_and_charges_nothing(
    config: Config, clock: Clock, tmp_path: Path
) -> None:
    db = await Database(config.database_path, busy_timeout_ms=200).open()
    try:
        service = MusicService(config, db, clock=clock)
        await service.balance(member())
        before = snapshot(config.database_path)
        holder = sqlite3.connect(config.database_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process is in a long write
        try:
            with pytest.raises(DatabaseBusy, match=r"busy right now.*nothing was"):
                await order(service, member())
        finally:
            holder.rollback()
            holder.close()
        assert snapshot(config.database_path) == before
        assert (await order(service, member())).price == 10  # and it works again at once
    finally:
        await db.close()
