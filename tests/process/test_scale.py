"""Issue #15 at scale: 4 ``musicbot worker`` and 2 ``musicbot frontends`` processes on one
database, 200 jobs, one worker SIGKILLed mid-batch and another stopped with SIGTERM.

Afterwards the books are counted from the committed rows and the processes' outputs: every
job ended done (delivered once, by a frontends process) or refunded exactly once; no job was
in two workers' models at the same time (every worker appends when the model starts and
stops working on a job to a shared trace file, ``MUSICBOT_TRACE``); and the killed worker's
jobs went back to the queue within the lease time. The frontends use the console frontend,
whose delivery prints ``🎶 Job #N for …``: a real delivery path through the outbox.

The database is a parameter (``database``): a SQLite file (skipped in the PostgreSQL pass,
which ran it already as the SQLite one), and a fresh PostgreSQL database from ``tests.pg``
when ``MUSICBOT_TEST_DB=postgres`` (skipped otherwise), where idle workers wake on
LISTEN/NOTIFY and claims take rows ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from tests import pg

from .harness import (
    Bot,
    books,
    deliveries,
    queue,
    rows,
    start_bot,
    states,
    wait_until,
    write_config,
)

JOBS = 200
LEASE_S = 3.0
WORKERS = 4
FRONTENDS = 2
SETTLED = ("done", "failed", "cancelled")


@pytest.fixture(params=[
    pytest.param("sqlite", marks=pytest.mark.sqlite_only),
    pytest.param("postgres", marks=pytest.mark.skipif(
        not pg.wanted(), reason="MUSICBOT_TEST_DB=postgres only (the PostgreSQL pass)")),
])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ``database`` setting every process of the test shares."""
    if request.param == "postgres":
        return pg.test_database()
    return str(tmp_path / "bot.sqlite3")


def _settled(folder: Path) -> bool:
    return all(state in SETTLED for state in states(folder).values())


def _count(folder: Path, state: str) -> int:
    return sum(s == state for s in states(folder).values())


def _owner_of(bot: Bot) -> str | None:
    """The owner id a process writes on the jobs it holds (``host:pid:random``)."""
    found = rows(bot.folder, "SELECT DISTINCT owner FROM jobs WHERE owner LIKE ?",
                 (f"%:{bot.proc.pid}:%",))
    return found[0]["owner"] if found else None


def _running_of(folder: Path, owner: str) -> list[int]:
    return [r["id"] for r in rows(folder, "SELECT id FROM jobs WHERE state = 'running' AND "
                                          "owner = ?", (owner,))]


def _render_intervals(trace: Path, ends: dict[int, float]) -> dict[int, list[tuple[float,
                                                                                  float, int]]]:
    """job → [(begin, end, pid)] of every time a model worked on it; a process that died
    mid-render ends its intervals at the time it was killed (``ends``)."""
    open_at: dict[tuple[int, int], float] = {}
    spans: dict[int, list[tuple[float, float, int]]] = defaultdict(list)
    for line in trace.read_text().splitlines():
        at, pid, event, job = line.split()
        key = (int(pid), int(job))
        if event == "render-begin":
            open_at[key] = float(at)
        else:
            spans[int(job)].append((open_at.pop(key), float(at), int(pid)))
    for (pid, job), begin in open_at.items():
        spans[job].append((begin, ends.get(pid, float("inf")), pid))
    return spans


def _overlaps(spans: list[tuple[float, float, int]]) -> bool:
    ordered = sorted(spans)
    return any(b[0] < a[1] for a, b in itertools.pairwise(ordered))


def test_frontends_process_never_imports_torch(tmp_path: Path) -> None:
    write_config(tmp_path)
    # The real `musicbot frontends`, which reports its sys.modules once it is up, then stops
    # itself the polite way (SIGTERM).
    probe = (
        "import os, signal, sys\n"
        "from bot import app, cli\n"
        "started = app.App.start\n"
        "async def start_then_report(self, **kwargs):\n"
        "    await started(self, **kwargs)\n"
        "    print('ROLE', self.role, 'TORCH', 'torch' in sys.modules, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "app.App.start = start_then_report\n"
        f"sys.exit(cli.main(['-C', {str(tmp_path / 'config.yaml')!r}, 'frontends']))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2],
                          stdin=subprocess.DEVNULL)
    assert "ROLE frontends TORCH False" in done.stdout, done.stdout + done.stderr
    assert done.returncode == 0, done.stderr


def test_many_workers_and_frontends_share_one_queue_through_kills(
    tmp_path: Path, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, lease_s=LEASE_S, max_batch=4, max_crashes=3)
    _use_database(tmp_path, database)
    trace = tmp_path / "render.trace"
    monkeypatch.setenv("MUSICBOT_TRACE", str(trace))
    jobs = queue(tmp_path, [(f"scale {i}", 1.0) for i in range(JOBS)])

    fronts = [start_bot(tmp_path, "frontends", name=f"front{i}") for i in range(FRONTENDS)]
    workers = [start_bot(tmp_path, "worker", name=f"worker{i}") for i in range(WORKERS)]
    killed, stopped = workers[0], workers[1]
    ends: dict[int, float] = {}
    try:
        # SIGKILL in the middle of a batch: while it holds running jobs, once work is under way.
        assert wait_until(lambda: _count(tmp_path, "done") >= 20 and _owner_of(killed)
                          and _running_of(tmp_path, _owner_of(killed) or ""), 240)
        owner = _owner_of(killed)
        assert owner is not None
        orphans = _running_of(tmp_path, owner)
        ends[killed.proc.pid] = time.time()
        killed.kill()
        assert orphans
        # Re-queued within the lease (recovery runs every lease/2 in every process), with
        # a second of slack for a busy 2-core machine to schedule the recovering process.
        assert wait_until(lambda: not _running_of(tmp_path, owner), LEASE_S + 1.0), orphans

        assert wait_until(lambda: _count(tmp_path, "done") >= 60, 240)
        assert stopped.stop() == 0  # SIGTERM: its running jobs go back to the queue at once
        ends[stopped.proc.pid] = time.time()

        assert wait_until(lambda: _settled(tmp_path), 300), _count(tmp_path, "queued")
    finally:
        for bot in [*workers, *fronts]:
            if bot.alive():
                bot.stop()

    final = states(tmp_path)
    assert set(final) == set(jobs)
    assert set(final.values()) <= set(SETTLED)
    outcome = books(tmp_path)
    assert outcome.lost == 0
    assert outcome.charged_twice == outcome.refunded_twice == 0
    assert outcome.delivered_and_refunded == 0
    assert outcome.balance_matches_ledger
    done = {job for job, state in final.items() if state == "done"}
    assert deliveries(tmp_path) == dict.fromkeys(done, 1)  # only the frontends post, once
    refunded = {r["job_id"] for r in rows(tmp_path, "SELECT job_id FROM ledger "
                                                    "WHERE kind = 'refund'")}
    assert refunded == set(final) - done

    spans = _render_intervals(trace, ends)
    assert set(spans) >= done
    assert not [job for job, each in spans.items() if _overlaps(each)]
    assert any(len({pid for *_, pid in each}) > 1 for each in spans.values())  # taken over
    assert _only_frontends_delivered(tmp_path)


def _use_database(folder: Path, database: str) -> None:
    # through YAML, not a text edit: a PostgreSQL URL carries '?', '&' and '='
    config = folder / "config.yaml"
    settings = yaml.safe_load(config.read_text())
    settings["database"] = database
    config.write_text(yaml.safe_dump(settings))


def _only_frontends_delivered(folder: Path) -> bool:
    """No worker process posted a track (delivery runs only where frontends run)."""
    return all("Job #" not in out.read_text(errors="replace")
               for out in folder.glob("*-worker*.out"))
