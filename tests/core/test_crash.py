"""Crashes: the bot process dies (``os._exit``) between any two writes; a new process opens
the same file, recovers the dead process's jobs, and no token is lost or doubled.

The child process is the real service on the real file. It is killed from SQLite's own
trace hook right before a chosen statement runs, so the crash lands exactly between two
steps of a transaction (or between two transactions) — no code of ours is patched.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config
from bot.core.models import JobState
from bot.core.service import MusicService

from .conftest import Clock, assert_books_balance, complete, make_config, member, raw, track

pytestmark = [pytest.mark.slow, pytest.mark.sqlite_only]  # child processes trace SQLite

REPO = Path(__file__).resolve().parents[2]

# One "life" of the bot: members order, the worker delivers one, fails one, a member cancels
# a queued one, then two jobs are running (one with a cancel asked) when the process dies.
CHILD = r"""
import asyncio, dataclasses, json, os, sys
from pathlib import Path
from bot.config import LimitsConfig, RateLimit, load_config
from bot.core.db import Database
from bot.core.models import Actor, Destination, MusicRequest, Track
from bot.core.service import MusicService

args = json.loads(sys.argv[1])
crash_at, writes = args["crash_at"], []

class Frontend:
    platform = "console"
    async def notify(self, event): pass
    async def deliver(self, job, track): pass

def trace(sql):
    word = sql.lstrip().split(None, 1)[0].upper()
    if word in ("INSERT", "UPDATE", "DELETE", "COMMIT"):
        writes.append(sql)
        if len(writes) == crash_at:
            os._exit(3)  # the power goes out right before this statement runs

async def life():
    base = load_config(None, environ={}, dotenv=None)
    config = dataclasses.replace(
        base, database=args["db"],
        limits=LimitsConfig(max_duration_s=30.0, max_queued_per_user=10_000,
                            max_queue=100_000, rate_limit=RateLimit(100_000, 60.0)),
        economy=dataclasses.replace(base.economy, starting_balance=100),
        generation=dataclasses.replace(base.generation, max_attempts=args["max_attempts"],
                                       max_crashes=args["max_crashes"]),
        models=dataclasses.replace(base.models, default="small"))
    db = await Database(config.database_path).open()
    service = MusicService(config, db)
    service.register_frontend(Frontend())
    await service.start()
    db._writer.raw.set_trace_callback(trace)
    alice, bob = (Actor("console", "guild-1", u) for u in ("alice", "bob"))
    def where(a): return Destination("console", a.community, "general", a.user)
    async def order(actor, key):
        return await service.request_music(actor, MusicRequest("lofi", 5), where(actor), key)
    await order(alice, "a"); await order(bob, "b"); await order(alice, "c")
    first, second = await service.settlement.claim(2)
    await service.settlement.rendered(first, Track("/tmp/x.mp3", "mp3", 5.0, 3, 32000))
    await service.delivery.deliver_due()
    await service.settlement.fail(second.id, "model crashed")
    await service.cancel(alice)  # alice's queued "c": refunded at once
    await order(alice, "d"); await order(bob, "e")
    running = await service.settlement.claim(2)
    await service.cancel(bob, running[1].id)  # asks the worker to stop "e"
    print(json.dumps({"writes": len(writes)}), flush=True)
    os._exit(9)  # killed while generating

asyncio.run(life())
"""


async def _run_child(
    db: Path, crash_at: int, max_attempts: int = 2, max_crashes: int = 3
) -> tuple[int, str]:
    payload = json.dumps({"db": str(db), "crash_at": crash_at, "max_attempts": max_attempts,
                          "max_crashes": max_crashes})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, payload, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode in (3, 9), err.decode()[-2000:]
    return proc.returncode, out.decode()


def _config(db: Path, max_attempts: int = 2, max_crashes: int = 3) -> Config:
    config = make_config(db.parent, generation={"max_attempts": max_attempts,
                                                "max_crashes": max_crashes})
    assert config.database_path == db
    return config


def _states(db: Path) -> dict[str, str]:
    conn = raw(db)
    try:
        return {r["idempotency_key"]: r["state"] for r in conn.execute("SELECT * FROM jobs")}
    finally:
        conn.close()


async def _recover_and_finish(open_service: Any, db: Path, tmp_path: Path, attempts: int) -> None:
    """A new process: recover, check the books, then let the worker deliver what is left."""
    service: MusicService = await open_service(_config(db, attempts))
    await service.recovery.recover()
    assert "running" not in _states(db).values()
    assert_books_balance(db)
    while batch := await service.settlement.claim(4):
        for job in batch:
            await complete(service, job, track(tmp_path, job))
    assert_books_balance(db)
    _assert_every_token_accounted(db)


def _assert_every_token_accounted(db: Path) -> None:
    """Balance = starting balance - price of every delivered track; nothing else is spent."""
    conn = raw(db)
    try:
        for account in conn.execute("SELECT * FROM accounts"):
            delivered = conn.execute(
                "SELECT COALESCE(SUM(price), 0) FROM jobs WHERE account_id = ? AND state = 'done'",
                (account["id"],)).fetchone()[0]
            assert account["balance"] == 100 - delivered, dict(account)
            assert conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE account_id = ? AND state IN ('queued', 'running')",
                (account["id"],)).fetchone()[0] == 0
    finally:
        conn.close()


async def test_bot_killed_while_generating_requeues_jobs_without_spending_attempts(
    open_service: Any, tmp_path: Path
) -> None:
    db = tmp_path / "bot.sqlite3"
    code, _ = await _run_child(db, crash_at=0)
    assert code == 9 and _states(db) == {
        "a": "done", "b": "failed", "c": "cancelled", "d": "running", "e": "running"}

    service: MusicService = await open_service(_config(db))
    report = await service.recovery.recover()  # the dead child's pid: no lease wait

    assert len(report.requeued) == 1 and len(report.cancelled) == 1 and report.failed == []
    assert _states(db) == {
        "a": "done", "b": "failed", "c": "cancelled", "d": "queued", "e": "cancelled"}
    assert await service.balance(member("bob")) == 100  # "b" failed, "e" cancelled: refunded
    assert_books_balance(db)
    [job] = await service.settlement.claim(4)  # "d" again; the crash was not its fault
    assert job.idempotency_key == "d" and job.attempts == 1 and job.crashes == 1
    await complete(service, job, track(tmp_path, job))
    _assert_every_token_accounted(db)


async def test_job_running_at_its_last_allowed_crash_fails_and_refunds(
    open_service: Any, tmp_path: Path
) -> None:
    db = tmp_path / "bot.sqlite3"
    await _run_child(db, crash_at=0, max_crashes=1)

    service: MusicService = await open_service(_config(db, max_crashes=1))
    report = await service.recovery.recover()
    again = await service.recovery.recover()  # a second pass finds nothing more to do

    assert len(report.failed) == 1 and len(report.cancelled) == 1 and report.requeued == []
    assert again.failed == again.cancelled == again.requeued == []
    assert _states(db)["d"] == JobState.FAILED
    assert await service.balance(member("alice")) == 90  # only the delivered "a" was paid
    assert_books_balance(db)
    _assert_every_token_accounted(db)


async def test_crash_before_any_write_of_the_bots_life_loses_no_token(
    open_service: Any, tmp_path: Path, clock: Clock
) -> None:

    _, out = await _run_child(tmp_path / "count.sqlite3", crash_at=0)
    total = json.loads(out)["writes"]
    assert total > 20
    gate = asyncio.Semaphore(4)

    async def one(point: int) -> None:
        folder = tmp_path / f"crash-{point}"
        folder.mkdir()
        async with gate:
            code, _ = await _run_child(folder / "bot.sqlite3", crash_at=point)
        assert code == 3
        clock.now = max(clock.now, time.time() + 1)  # the child's tracks are due by now
        try:
            await _recover_and_finish(open_service, folder / "bot.sqlite3", folder, 2)
        except AssertionError as exc:
            raise AssertionError(f"crash before write #{point}: {exc}") from exc

    await asyncio.gather(*(one(point) for point in range(1, total + 1)))


def test_crash_mid_transaction_leaves_nothing_half_written(tmp_path: Path) -> None:
    """A charge whose transaction never committed is invisible: no job, no ledger line."""
    db = tmp_path / "bot.sqlite3"
    asyncio.run(_run_child(db, crash_at=0))
    before = _states(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE accounts SET balance = balance - 10 WHERE user = 'alice'")
    conn.execute(
        "INSERT INTO ledger (account_id, delta, balance_after, kind, actor, created_at) "
        "SELECT id, -10, balance, 'charge', 'alice', 0 FROM accounts WHERE user = 'alice'")
    conn.close()  # the process holding the transaction is gone; nothing was committed

    assert _states(db) == before
    assert_books_balance(db)
