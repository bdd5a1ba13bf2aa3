"""Ledger throughput: charges + refunds per second on a real SQLite file under concurrency.

``--tasks`` members order tracks at once (``request_music`` = one charge each). Every other
job is cancelled by its member while queued (refund at once); the rest are claimed through
the worker API and reported failed (refund). Every charge therefore ends in exactly one
refund, and the books are checked at the end. The figure counts ledger lines written by
charges and refunds per wall-clock second.

Modes (``--mode``):
- ``shallow`` (default): after each order that it does not cancel, the member's task claims
  one job and fails it, so the queue stays short (the ledger path is what is measured);
- ``deep``: one separate worker claims and fails; it gets the write lock once per ~50
  orders, so the queue grows to hundreds and the per-order queue position/ETA queries
  (O(queue length)) dominate. Stress figure, not the ledger's.

Both backends by default: SQLite (a temp file) and PostgreSQL (a throw-away local cluster,
Debian's postgresql 15, as in the tests; or ``--pg-url``). The books are checked through the
storage port on each.

Usage: ``python -m bench.ledger [--tasks 50] [--requests 20] [--mode shallow|deep]
[--db PATH] [--backend sqlite|postgres|both] [--pg-url URL] [--profile]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import pstats
import tempfile
import time
from pathlib import Path

from bot.config import Config, LimitsConfig, RateLimit, load_config
from bot.core.db import Database
from bot.core.errors import JobNotCancellable
from bot.core.models import Actor, Destination, Job, MusicRequest
from bot.core.service import MusicService

TARGET = 1000.0


def bench_config(db_path: Path | str, tasks: int, requests: int) -> Config:
    base = load_config(None, environ={}, dotenv=None)
    return dataclasses.replace(
        base,
        database=str(db_path),
        limits=LimitsConfig(max_queued_per_user=requests + 1, max_queue=tasks * requests + 1,
                            rate_limit=RateLimit(count=requests + 1, window_s=60.0)),
        economy=dataclasses.replace(base.economy, starting_balance=10 * requests),
    )


async def member_task(service: MusicService, index: int, requests: int, claim: bool) -> None:
    """One member: order, and cancel every other order while it is still queued.

    With ``claim`` the task then plays the worker for one job: claim it and report it failed.
    """
    actor = Actor("console", "bench", f"user{index}")
    where = Destination("console", "bench", "general", actor.user)
    for n in range(requests):
        receipt = await service.request_music(
            actor, MusicRequest("lofi beat", 5), where, f"bench-{index}-{n}")
        if n % 2 == 0:
            # JobNotCancellable: the worker got to it first; it will report it failed.
            with contextlib.suppress(JobNotCancellable):
                await service.cancel(actor, receipt.job.id)
        elif claim:
            await fail_all(service, await service.settlement.claim(1))


async def fail_all(service: MusicService, batch: list[Job]) -> None:
    for job in batch:
        if service.settlement.cancel_requested(job.id):
            await service.settlement.finish_cancelled(job.id)
        else:
            await service.settlement.fail(job.id, "benchmark failure")


async def worker(service: MusicService, members_done: asyncio.Event) -> None:
    """Claims batches and reports each job failed (refund), until the queue stays empty.

    It sleeps on the queue's wake-up event between claims, as the real worker loop does
    (a claim that finds nothing still costs a write transaction)."""
    wake = service.settlement.work_available
    while True:
        wake.clear()  # before the claim: a job queued during it sets it again
        batch = await service.settlement.claim(4)
        await fail_all(service, batch)
        if batch:
            continue
        if members_done.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), 0.05)


async def run(target: Path | str, tasks: int, requests: int, mode: str) -> tuple[int, float]:
    """Returns (charges + refunds written, seconds). ``target``: a SQLite path or a
    ``postgresql://`` URL."""
    db = await Database(target).open()
    try:
        service = MusicService(bench_config(target, tasks, requests), db)
        await service.start()
        members_done = asyncio.Event()
        started = time.perf_counter()
        work = asyncio.create_task(worker(service, members_done))
        await asyncio.gather(
            *(member_task(service, i, requests, mode == "shallow") for i in range(tasks)))
        members_done.set()
        await work
        elapsed = time.perf_counter() - started
        return await check_books(db, tasks * requests), elapsed
    finally:
        await db.close()


async def check_books(db: Database, expected_jobs: int) -> int:
    """Every job charged once and refunded once; balances equal their ledger sums."""
    kinds = {row[0]: int(row[1]) for row in await db.fetchall(
        "SELECT kind, COUNT(*) FROM ledger WHERE kind IN ('charge', 'refund') GROUP BY kind")}
    assert kinds.get("charge") == kinds.get("refund") == expected_jobs, kinds
    row = await db.fetchone(
        "SELECT COUNT(*) FROM accounts a WHERE balance <> "
        "(SELECT SUM(delta) FROM ledger l WHERE l.account_id = a.id)")
    assert row is not None and row[0] == 0, f"{row[0] if row else '?'} balances differ"
    return kinds["charge"] + kinds["refund"]


def measure(target: Path | str, args: argparse.Namespace, label: str) -> None:
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    lines, seconds = asyncio.run(run(target, args.tasks, args.requests, args.mode))
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    rate = lines / seconds
    verdict = "ok" if rate >= TARGET else "BELOW TARGET"
    print(f"[{label}] {args.tasks} tasks x {args.requests} requests ({args.mode} queue): "
          f"{lines} ledger lines (charges+refunds) in {seconds:.2f} s, books balance")
    print(f"[{label}] charges+refunds/s: {rate:,.0f} (target >= {TARGET:,.0f}; ratio "
          f"{rate / TARGET:.2f}) {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50, help="concurrent members (50)")
    parser.add_argument("--requests", type=int, default=20, help="orders per member (20)")
    parser.add_argument("--mode", choices=("shallow", "deep"), default="shallow",
                        help="who claims and fails jobs (see the module docstring)")
    parser.add_argument("--db", type=Path, help="SQLite file to use (default: a temp file)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both",
                        help="postgres: a throw-away local cluster (tests/pg.py) unless "
                             "--pg-url names a server (default: both)")
    parser.add_argument("--pg-url", help="postgresql:// URL of an existing, empty database")
    args = parser.parse_args()
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as folder:
            measure(args.db or Path(folder) / "ledger-bench.sqlite3", args, "sqlite")
    if args.backend in ("postgres", "both"):
        if args.pg_url:
            measure(args.pg_url, args, "postgres")
        else:
            from tests.pg import PgServer  # a throw-away server, as the tests use

            server = PgServer().start()
            try:
                measure(server.new_database(), args, "postgres")
            finally:
                server.stop()


if __name__ == "__main__":
    main()
