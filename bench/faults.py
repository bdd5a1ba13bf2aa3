"""Fault injection: 50 jobs through a real ``musicbot run``, SIGKILLed again and again.

Each round starts the bot on the same SQLite file and kills it — at a crash point inside the
job's life (claimed, generating, rendered, delivering = after the platform took the track
and before ``done`` is committed, delivered) or after a random delay — until at least
``--kills`` deaths; then one last run finishes the queue. It prints what a member would care
about, counted from the file and from every run's output:

    jobs lost, charged twice, refunded twice, delivered and refunded — must all be 0;
    delivered twice — a repeated message after a kill mid-upload (at-least-once delivery);
    done % (≥ 90 %), and the time from a restart to its first claim.

Usage: ``python -m bench.faults [--jobs 50] [--kills 25] [--seed 1]`` (takes a few minutes).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from tests.process.harness import books, queue, rows, start_bot, states, wait_until, write_config

POINTS = ("claimed", "generating", "rendered", "delivering", "delivered")


def _settled(folder: Path) -> bool:
    return all(s in ("done", "failed", "cancelled") for s in states(folder).values())


def _first_claim_after(folder: Path, since: float) -> float | None:
    found = rows(folder, "SELECT MIN(started_at) AS t FROM jobs WHERE started_at >= ?", (since,))
    return found[0]["t"] if found and found[0]["t"] is not None else None


def _worker_started(out: Path) -> float | None:
    """When the run's worker started (models loaded), from its log line."""
    for line in out.read_text(errors="replace").splitlines():
        if "generation worker started" in line:
            stamp = line[:23]  # logging's asctime: 2026-11-23 18:53:42,123
            return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--kills", type=int, default=25)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="musicbot-faults-"))
    write_config(folder)
    queue(folder, [(f"track {i}", rng.choice((1.0, 2.0, 3.0))) for i in range(args.jobs)])

    kills, restarts_to_claim, ready_to_claim, began = 0, [], [], time.time()
    while kills < args.kills and not _settled(folder):
        if rng.random() < 0.6:
            rule = f"{rng.choice(POINTS)}#{rng.randint(1, 3)}"
            bot = start_bot(folder, crash_at=rule)
            died = bot.wait(120) is not None
            if not died:
                bot.kill()
        else:
            bot = start_bot(folder)
            time.sleep(rng.uniform(4.0, 12.0))  # model load is ~4 s: kill mid-work
            bot.kill()
        kills += 1
        claimed = _first_claim_after(folder, bot.started)
        ready = _worker_started(bot.out)
        if claimed is not None:
            restarts_to_claim.append(claimed - bot.started)
            if ready is not None and claimed >= ready:
                ready_to_claim.append(claimed - ready)

    final = start_bot(folder)
    wait_until(lambda: _settled(folder), 900, every=0.5)
    final.stop()
    outcome = books(folder)
    print(f"folder                      : {folder}")
    print(f"jobs                        : {outcome.jobs}")
    print(f"SIGKILLs                    : {kills}")
    print(f"jobs lost                   : {outcome.lost}")
    print(f"charged twice               : {outcome.charged_twice}")
    print(f"refunded twice              : {outcome.refunded_twice}")
    print(f"delivered and refunded      : {outcome.delivered_and_refunded}")
    print(f"delivered twice             : {outcome.delivered_twice}  (repeated message after "
          "a kill mid-upload)")
    print(f"done                        : {100 * outcome.done / outcome.jobs:.0f} %"
          f"  ({outcome.failed} failed/cancelled, refunded)")
    print(f"balances equal their ledger : {outcome.balance_matches_ledger}")
    if restarts_to_claim:
        print(f"restart -> first claim      : median {statistics.median(restarts_to_claim):.1f} s,"
              f" max {max(restarts_to_claim):.1f} s (process start incl. torch import and "
              "model load)")
    if ready_to_claim:
        print(f"worker ready -> first claim : median {statistics.median(ready_to_claim):.2f} s,"
              f" max {max(ready_to_claim):.2f} s")
    print(f"wall time                   : {time.time() - began:.0f} s")


if __name__ == "__main__":
    main()
