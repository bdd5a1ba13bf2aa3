"""Jobs per second for 1, 2 and 4 ``musicbot worker`` processes on one queue (CPU, debug model).

For each worker count: a fresh database, N real worker processes started and warmed up on an
empty queue, then ``--jobs`` jobs queued at once from this process (the way a frontends
process queues them). Throughput is jobs over the time from queuing to the last ``rendered``
commit (the worker's part; delivery belongs to the frontends). Then the claim latency
(queued → running) of single jobs sent to the now idle workers, one every two seconds: with
no in-process wake-up across processes, it is the worker's poll (``generation.poll_s``) plus
one claim transaction. Prints a table; docs/scaling.md records the numbers.

Usage: ``python -m bench.scale [--jobs 48] [--seconds 1] [--workers 1 2 4] [--batch 4]``
(takes a few minutes on a 2-core machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from tests.process.harness import Bot, queue, rows, start_bot, wait_until, write_config

IDLE_PROBES = 5


def _ready(bot: Bot) -> bool:
    return "is running" in bot.out.read_text(errors="replace")


def _rendered(folder: Path) -> int:
    found = rows(folder, "SELECT COUNT(*) AS n FROM jobs WHERE state IN ('rendered', 'done')")
    return int(found[0]["n"])


def measure(workers: int, jobs: int, seconds: float, batch: int) -> dict[str, float]:
    """One row of the table: throughput and claim latencies with ``workers`` processes."""
    with tempfile.TemporaryDirectory(prefix="musicbot-scale-") as temp:
        folder = Path(temp)
        write_config(folder, max_batch=batch, lease_s=30, poll_s=0.2)
        bots = [start_bot(folder, "worker", name=f"worker{i}") for i in range(workers)]
        try:
            if not wait_until(lambda: all(_ready(b) for b in bots), 600, every=0.5):
                raise SystemExit("the workers did not start; see their output in " + temp)
            started = time.time()
            queue(folder, [(f"scale {i}", seconds) for i in range(jobs)])
            if not wait_until(lambda: _rendered(folder) >= jobs, 3600, every=0.2):
                raise SystemExit("the queue did not drain")
            last = rows(folder, "SELECT MAX(rendered_at) AS t FROM jobs")[0]["t"]
            waits = [r["w"] for r in rows(folder, "SELECT started_at - created_at AS w "
                                                  "FROM jobs WHERE started_at IS NOT NULL")]
            idle = _idle_claim_latency(folder, seconds, jobs)
        finally:
            for bot in bots:
                bot.stop()
    return {"workers": workers, "jobs_per_s": jobs / (last - started),
            "audio_s_per_s": jobs * seconds / (last - started),
            "wait_median_s": statistics.median(waits), "idle_claim_median_s":
            statistics.median(idle), "idle_claim_max_s": max(idle)}


def _idle_claim_latency(folder: Path, seconds: float, offset: int) -> list[float]:
    """queued → running of single jobs sent to idle workers."""
    latencies = []
    for i in range(IDLE_PROBES):
        [job] = queue(folder, [(f"idle probe {offset + i}", seconds)])
        wait_until(lambda job=job: rows(folder, "SELECT started_at FROM jobs WHERE id = ?",
                                        (job,))[0]["started_at"] is not None, 60, every=0.02)
        row = rows(folder, "SELECT started_at - created_at AS w FROM jobs WHERE id = ?", (job,))
        latencies.append(float(row[0]["w"]))
        wait_until(lambda n=offset + i + 1: _rendered(folder) >= n, 120, every=0.1)
        time.sleep(2)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=1.0, help="audio seconds per job")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch", type=int, default=4, help="generation.max_batch")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU cores; {args.jobs} jobs of {args.seconds:g} s, debug model, "
          f"max_batch {args.batch}")
    print(f"{'workers':>7} {'jobs/s':>7} {'audio s/s':>9} {'wait med':>9} "
          f"{'idle claim med':>14} {'idle claim max':>14}")
    base = None
    for workers in args.workers:
        row = measure(workers, args.jobs, args.seconds, args.batch)
        base = base or row["jobs_per_s"]
        print(f"{workers:>7} {row['jobs_per_s']:>7.2f} {row['audio_s_per_s']:>9.2f} "
              f"{row['wait_median_s']:>8.1f}s {row['idle_claim_median_s']:>13.3f}s "
              f"{row['idle_claim_max_s']:>13.3f}s   x{row['jobs_per_s'] / base:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
