"""ETA accuracy: what a member is promised at /music time vs when the track is made.

A queue of mixed lengths arrives at once; the worker (continuous batching) has warmed up, as
``musicbot run`` does at start. For each job the receipt's ETA is compared with the measured
time from request to ``rendered``. Prints the median and p90 of |error| / actual.

Usage: ``python -m bench.eta [--jobs 12] [--slots 4] [--model bench-small|debug]``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import MEMBER, TimingFrontend, bench_config, open_service
from bench.throughput import MODEL_KEY, build_model
from bot.core.models import Destination, JobState, MusicRequest
from generation.engine import Engine
from generation.worker import Worker


async def run(jobs: int, model: str, slots: int,
              lengths: tuple[float, ...]) -> list[tuple[float, float, float, float]]:
    """(audio seconds, ETA at its request, ETA once all are queued, actual) per job; the
    worker starts after the last request, so "actual" counts from then."""
    if model == MODEL_KEY:  # musicgen-small's architecture, random weights (bench.throughput)
        engine = Engine(build_model(), MODEL_KEY, "cpu", noise=True)
    else:
        engine = Engine.load(model, "cpu")
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        config = bench_config(Path(tmp), model, slots)
        service = await open_service(config, TimingFrontend())
        worker = Worker(service.settlement, {model: engine}, config)
        try:
            await worker.warm_up()
            rows, etas = [], {}
            for i in range(jobs):
                seconds = rng.choice(lengths)
                asked = time.perf_counter()
                music = MusicRequest(prompt=f"eta {i}", duration=seconds, model=model, seed=i)
                destination = Destination("console", MEMBER.community, "bench", MEMBER.user)
                receipt = await service.request_music(MEMBER, music, destination, f"eta-{i}")
                rows.append((receipt.job.id, seconds, asked))
                etas[receipt.job.id] = receipt.eta_s
            # What /queue shows once every job is in: the same estimate, knowing the batch.
            known = {}
            for job_id, _, _ in rows:
                _, known[job_id] = await service.places.place(job_id)
            started = time.perf_counter()
            await worker.start()
            done: dict[int, float] = {}
            while len(done) < jobs:
                for job_id, _, _ in rows:
                    if job_id not in done and (await service.get_job(job_id)).state in (
                            JobState.RENDERED, JobState.DONE):
                        done[job_id] = time.perf_counter()
                await asyncio.sleep(0.05)
            return [(seconds, etas[job_id] or 0.0, known[job_id] or 0.0,
                     done[job_id] - started) for job_id, seconds, _ in rows]
        finally:
            await worker.stop()
            await service.db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--model", default=MODEL_KEY,
                        help=f"{MODEL_KEY} (random musicgen-small architecture) or debug")
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args()
    lengths = (0.5, 1.0, 1.5, 2.0) if args.model == MODEL_KEY else (2.0, 4.0, 6.0, 8.0)
    results = asyncio.run(run(args.jobs, args.model, args.slots, lengths))
    for seconds, at_request, known, actual in results:
        print(f"{seconds:4.1f} s track: at its request {at_request:6.1f} s, with the whole queue "
              f"{known:6.1f} s, made in {actual:6.1f} s")
    for name, column in (("at request", 1), ("whole queue", 2)):
        errors = sorted(abs(r[column] - r[3]) / r[3] for r in results)
        print(f"|error| / actual, {name:<11}: median {statistics.median(errors):.0%}, "
              f"p90 {errors[int(0.9 * (len(errors) - 1))]:.0%} "
              f"({args.jobs} jobs, {args.slots} slots)")


if __name__ == "__main__":
    main()
