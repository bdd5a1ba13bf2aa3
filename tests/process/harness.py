"""A real ``musicbot run`` process on a real database, and the books to check after it.

The database is the config's ``database:`` line (``write_config`` writes the SQLite file
``bot.sqlite3``; a test may put a ``postgresql://`` URL there instead): :func:`connect`
reads it and returns sqlite3, or ``tests.pg.SyncPg`` with the same shape for PostgreSQL.

Used by the process tests and by ``bench/faults.py``. The bot runs with the ``debug`` model
and no chat credentials, so its console frontend prints every delivered track to stdout
("🎶 Job #N for …"); members' jobs are queued from the test process through the real
core on the same file, the way a second frontend process would.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.config import load_config
from bot.core.db import Database
from bot.core.models import Actor, Destination, MusicRequest
from bot.core.service import MusicService
from tests.pg import SyncPg

REPO = Path(__file__).resolve().parents[2]
MEMBER = Actor("console", "@dm", "alice")
DELIVERED = re.compile(r"Job #(\d+) for ")
STARTING_BALANCE = 100_000


def write_config(folder: Path, **generation: Any) -> Path:
    """A config for a fast, small bot in ``folder`` (debug model, short leases)."""
    settings = {
        "database": str(folder / "bot.sqlite3"),
        "data_dir": str(folder / "data"),
        "log_level": "INFO",
        "models": {"default": "debug"},
        "generation": {"device": "cpu", "max_batch": 4, "lease_s": 3, "poll_s": 0.2,
                       "max_attempts": 2, "progress_interval_s": 0.1, **generation},
        "delivery": {"retry_delays_s": [0.2, 0.5]},
        "limits": {"max_queued_per_user": 1000, "max_queue": 1000,
                   "rate_limit": {"count": 1000, "window_s": 60}},
        "economy": {"starting_balance": STARTING_BALANCE},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


@dataclass
class Bot:
    """One ``musicbot`` process; its stdout and stderr go to files in its folder."""

    folder: Path
    proc: subprocess.Popen[bytes]
    out: Path
    started: float = field(default_factory=time.time)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, the polite stop; returns the exit status."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def start_bot(folder: Path, *args: str, crash_at: str = "", name: str = "run") -> Bot:
    """Start ``musicbot ARGS`` (default ``run``) on the folder's config."""
    runs = len(list(folder.glob("*.out")))
    out = folder / f"{runs:03d}-{name}.out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "MUSICBOT_CRASH_AT": crash_at}
    env.pop("DISCORD_TOKEN", None)
    env.pop("SLACK_BOT_TOKEN", None)
    command = [sys.executable, "-m", "bot.cli", "-C", str(folder / "config.yaml"),
               *(args or ("run",))]
    with out.open("wb") as sink:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=sink,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Bot(folder, proc, out)


async def queue_jobs(folder: Path, prompts: list[tuple[str, float]]) -> list[int]:
    """Queue one job per (prompt, seconds) for MEMBER from this process; returns job ids."""
    config = load_config(folder / "config.yaml", environ={}, dotenv=None)
    db = await Database(config.database_path).open()
    try:
        service = MusicService(config, db)
        ids = []
        for i, (prompt, seconds) in enumerate(prompts):
            destination = Destination("console", MEMBER.community, "terminal", MEMBER.user)
            receipt = await service.request_music(
                MEMBER, MusicRequest(prompt=prompt, duration=seconds, seed=i), destination,
                f"{prompt}-{i}-{time.time_ns()}")
            ids.append(receipt.job.id)
        return ids
    finally:
        await db.close()


def queue(folder: Path, prompts: list[tuple[str, float]]) -> list[int]:
    return asyncio.run(queue_jobs(folder, prompts))


def set_balance(folder: Path, amount: int) -> None:
    """``musicbot admin set`` for MEMBER, through the core (an operator's command)."""

    async def act() -> None:
        config = load_config(folder / "config.yaml", environ={}, dotenv=None)
        db = await Database(config.database_path).open()
        try:
            operator = Actor(MEMBER.platform, MEMBER.community, "shell:test", is_admin=True,
                             operator=True)
            await MusicService(config, db).set_balance(operator, MEMBER.user, amount)
        finally:
            await db.close()

    asyncio.run(act())


def database_of(folder: Path) -> str:
    """The ``database:`` setting of the folder's config: a SQLite path or a PostgreSQL URL."""
    settings = yaml.safe_load((folder / "config.yaml").read_text())
    return str(settings["database"])


def connect(folder: Path) -> sqlite3.Connection | SyncPg:
    """A plain connection to the folder's database, for the tests' checks: sqlite3 for a
    file, ``SyncPg`` (sqlite3-shaped, autocommit) for a ``postgresql://`` URL. Rows read
    by name (``row["state"]``) on both."""
    database = database_of(folder)
    if database.startswith(("postgresql://", "postgres://")):
        return SyncPg(database)
    conn = sqlite3.connect(database, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def rows(folder: Path, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    conn = connect(folder)
    try:
        return list(conn.execute(sql, params))
    finally:
        conn.close()


def states(folder: Path) -> dict[int, str]:
    return {r["id"]: r["state"] for r in rows(folder, "SELECT id, state FROM jobs")}


def deliveries(folder: Path) -> Counter[int]:
    """How many times each job's track was posted, over every process that ran."""
    seen: Counter[int] = Counter()
    for out in sorted(folder.glob("*.out")):
        seen.update(int(m) for m in DELIVERED.findall(out.read_text(errors="replace")))
    return seen


def wait_until(check: Any, timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return bool(check())


@dataclass(frozen=True)
class Books:
    """The money and delivery outcome of a run, counted from the file and the outputs."""

    jobs: int
    done: int
    lost: int  # charged, and neither finished nor refunded, once everything settled
    charged_twice: int
    refunded_twice: int
    delivered_and_refunded: int
    delivered_twice: int
    failed: int
    balance_matches_ledger: bool


def books(folder: Path) -> Books:
    posted = deliveries(folder)
    job_rows = rows(folder, "SELECT * FROM jobs")
    charges = Counter(r["job_id"] for r in rows(folder, "SELECT job_id FROM ledger WHERE "
                                                        "kind = 'charge'"))
    refunds = Counter(r["job_id"] for r in rows(folder, "SELECT job_id FROM ledger WHERE "
                                                        "kind = 'refund'"))
    accounts = rows(folder, "SELECT a.balance, COALESCE(SUM(l.delta), 0) AS total FROM "
                            "accounts a LEFT JOIN ledger l ON l.account_id = a.id GROUP BY a.id")
    return Books(
        jobs=len(job_rows),
        done=sum(r["state"] == "done" for r in job_rows),
        lost=sum(r["state"] in ("queued", "running", "rendered") and not refunds[r["id"]]
                 for r in job_rows),
        charged_twice=sum(n > 1 for n in charges.values()),
        refunded_twice=sum(n > 1 for n in refunds.values()),
        delivered_and_refunded=sum(1 for job_id in posted if refunds[job_id]),
        delivered_twice=sum(n > 1 for n in posted.values()),
        failed=sum(r["state"] in ("failed", "cancelled") for r in job_rows),
        balance_matches_ledger=all(a["balance"] == a["total"] for a in accounts),
    )
