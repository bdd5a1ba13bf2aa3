"""Mixed queue: a naive one-job-at-a-time bot vs the continuous batcher, on the same model.

The model is ``bench.throughput``'s random-initialised musicgen-small LM (24 layers, dim 1024,
4 x 2048 codebooks, delay pattern, cross-attention) with a tiny 50 Hz codec. The queue is
what a community sends: lengths drawn over a range (scaled down for CPU), one job in four with
its own temperature/top-k/top-p/CFG, one in eight an extension of earlier audio.

Scenarios, all in this process:
1. throughput: every job arrives at once; naive = ``set_generation_params`` + ``generate`` per
   job (``generate_continuation`` for extensions), one after the other;
2. latency: arrivals spread over time; the batcher is run live, the naive bot's waits are
   replayed from its measured per-job times (a FIFO queue with the same arrivals);
3. the whole bot: the same queue (extensions as plain jobs of the same length: an extension
   needs a finished track) requested through the real ``MusicService`` on a SQLite file and
   run by the real ``Worker`` — claims, per-job MP3 encode, storage and delivery included —
   against the naive bot's generation time alone (so this ratio is conservative);
4. identical settings: ``Engine.generate`` batching (the old worker path) vs the batcher.
Scenarios 1, 2 and 4 time generation only (no MP3 encode), so their ratios are about decoding.

Usage: ``python -m bench.mixed [--jobs 16] [--slots 8] [--min-s 0.5] [--max-s 2]``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import torch

from bench.common import MEMBER, TimingFrontend, bench_config, open_service, percentile
from bench.throughput import MODEL_KEY, build_model
from bot.core.models import Destination, GenerationParams, MusicRequest
from generation import decode
from generation.audio import Audio
from generation.batcher import ContinuousBatcher
from generation.engine import Engine, GenerationRequest, without_onednn
from generation.worker import Worker


def make_queue(jobs: int, min_s: float, max_s: float, sample_rate: int) -> list[GenerationRequest]:
    """A reproducible mixed queue (seeded): lengths, sampling settings, extensions."""
    rng = random.Random(1234)
    previous = Audio(np.random.default_rng(0).uniform(-0.3, 0.3, (1, sample_rate))
                     .astype(np.float32), sample_rate)
    queue = []
    for i in range(jobs):
        settings: dict[str, float] = {}
        if i % 4 == 3:  # one in four picked its own sampling
            settings = {"temperature": rng.choice([0.7, 1.2]), "top_k": rng.choice([50, 0]),
                        "top_p": rng.choice([0.0, 0.9]), "cfg_coef": rng.choice([2.0, 5.0])}
        params = GenerationParams(f"prompt {i}: synth pop", round(rng.uniform(min_s, max_s), 2),
                                  MODEL_KEY, seed=i, **settings)  # type: ignore[arg-type]
        queue.append(GenerationRequest(params, previous if i % 8 == 5 else None))
    return queue


def naive_job(model, request: GenerationRequest) -> None:
    """What a simple bot does for one job (extensions continue the whole previous audio)."""
    p = request.params
    tail = 0.0 if request.continue_audio is None else request.continue_audio.duration_s
    model.set_generation_params(use_sampling=True, top_k=p.top_k, top_p=p.top_p,
                                temperature=p.temperature, cfg_coef=p.cfg_coef,
                                duration=tail + request.new_seconds)
    with without_onednn():
        if request.continue_audio is None:
            model.generate([p.text])
        else:
            wav = torch.from_numpy(request.continue_audio.samples)
            model.generate_continuation(wav[None], request.continue_audio.sample_rate, [p.text])


def run_naive(model, queue: list[GenerationRequest]) -> list[float]:
    """Seconds each job took, one after the other."""
    times = []
    for request in queue:
        start = time.perf_counter()
        naive_job(model, request)
        times.append(time.perf_counter() - start)
    return times


def run_batcher(engine: Engine, queue: list[GenerationRequest], slots: int,
                arrivals: list[float]) -> tuple[float, list[float], float]:
    """Submit each job at its arrival offset; returns wall, latencies, mean occupancy."""
    batcher = ContinuousBatcher(engine, slots=slots, kv_budget_mib=None)
    done: dict[int, float] = {}
    futures: list[Future[Audio]] = []
    start = time.perf_counter()
    try:
        for i, (request, at) in enumerate(zip(queue, arrivals, strict=True)):
            delay = start + at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            future = batcher.submit(request)
            future.add_done_callback(lambda _f, i=i: done.__setitem__(i, time.perf_counter()))
            futures.append(future)
        for future in futures:
            future.result()
        wall = max(done.values()) - start
        latencies = [done[i] - start - at for i, at in enumerate(arrivals)]
        return wall, latencies, batcher.mean_occupancy
    finally:
        batcher.close()


async def run_worker(engine: Engine, queue: list[GenerationRequest],
                     slots: int) -> tuple[float, float]:
    """Every job requested through the service, then the real worker drains the queue."""
    with tempfile.TemporaryDirectory() as tmp:
        config = bench_config(Path(tmp), MODEL_KEY, slots)
        service = await open_service(config, TimingFrontend())
        try:
            start = time.perf_counter()
            for i, r in enumerate(queue):
                p = r.params
                music = MusicRequest(prompt=p.prompt, duration=r.new_seconds, model=MODEL_KEY,
                                     seed=p.seed, temperature=p.temperature, top_k=p.top_k,
                                     top_p=p.top_p, cfg=p.cfg_coef)
                destination = Destination("console", MEMBER.community, "bench", MEMBER.user)
                await service.request_music(MEMBER, music, destination, f"mixed-{i}")
            worker = Worker(service.settlement, {MODEL_KEY: engine}, config)
            await worker.run_until_idle()
            await service.delivery.deliver_due()
            occupancy = worker._batchers[MODEL_KEY].mean_occupancy
            await worker.stop()
            return time.perf_counter() - start, occupancy
        finally:
            await service.db.close()


def replay_naive(times: list[float], arrivals: list[float]) -> list[float]:
    """Latencies of a FIFO one-at-a-time bot with these arrivals and per-job times."""
    free_at, latencies = 0.0, []
    for took, at in zip(times, arrivals, strict=True):
        free_at = max(free_at, at) + took
        latencies.append(free_at - at)
    return latencies


def line(name: str, wall: float, audio_s: float, latencies: list[float],
         occupancy: float | None = None) -> str:
    occ = f"  occupancy {occupancy:4.2f}" if occupancy is not None else ""
    return (f"{name:<20} wall {wall:7.1f} s  {audio_s / wall:5.3f} audio-s/s  "
            f"p50 {percentile(latencies, 50):6.1f} s  p95 {percentile(latencies, 95):6.1f} s{occ}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--min-s", type=float, default=0.5)
    parser.add_argument("--max-s", type=float, default=2.0)
    parser.add_argument("--identical", type=int, default=8, help="jobs in scenario 3 (0: skip)")
    parser.add_argument("--mkl", action="store_true",
                        help="batcher uses MKL sgemm like audiocraft (not oneDNN)")
    args = parser.parse_args()
    decode.ONEDNN_LINEAR = not args.mkl

    model = build_model()
    engine = Engine(model, MODEL_KEY, "cpu", noise=True)
    queue = make_queue(args.jobs, args.min_s, args.max_s, engine.sample_rate)
    audio_s = sum(r.new_seconds for r in queue)
    params = sum(p.numel() for p in model.lm.parameters()) / 1e6
    print(f"model: random musicgen-small LM ({params:.0f} M parameters), tiny 50 Hz codec, "
          f"{torch.get_num_threads()} torch threads")
    print(f"queue: {args.jobs} jobs, {audio_s:.1f} audio-s, lengths {args.min_s}-{args.max_s} s, "
          f"{sum(r.continue_audio is not None for r in queue)} extensions, "
          f"{sum(r.params.top_k != 250 or r.params.cfg_coef != 3.0 for r in queue)} "
          f"with own sampling; {args.slots} slots; batcher matmuls: "
          f"{'MKL' if args.mkl else 'oneDNN'}")
    engine.generate([GenerationParams("warm-up", 0.2, MODEL_KEY, 0)])  # first-call costs
    run_batcher(engine, queue[:1], args.slots, [0.0])

    times = run_naive(model, queue)
    early = [0.0] * len(queue)
    wall, lat, occ = run_batcher(engine, queue, args.slots, early)
    print("1) all jobs arrive at once")
    print(line("naive sequential", sum(times), audio_s, replay_naive(times, early)))
    print(line("continuous batcher", wall, audio_s, lat, occ))
    print(f"throughput ratio     {sum(times) / wall:5.2f}x")

    gap = 1.5 * wall / len(queue)
    spread = [i * gap for i in range(len(queue))]
    wall2, lat2, occ2 = run_batcher(engine, queue, args.slots, spread)
    print(f"2) arrivals every {gap:.1f} s")
    naive_lat = replay_naive(times, spread)
    naive_wall = max(a + w for a, w in zip(spread, naive_lat, strict=True))
    print(line("naive (replayed)", naive_wall, audio_s, naive_lat))
    print(line("continuous batcher", wall2, audio_s, lat2, occ2))

    wall4, occ4 = asyncio.run(run_worker(engine, queue, args.slots))
    print("3) the whole bot (service + SQLite + worker + MP3 + delivery), all at once")
    print(f"{'worker':<20} wall {wall4:7.1f} s  {audio_s / wall4:5.3f} audio-s/s  "
          f"occupancy {occ4:4.2f}")
    print(f"throughput ratio     {sum(times) / wall4:5.2f}x (vs naive generation alone)")

    if args.identical:
        same = [GenerationRequest(GenerationParams(f"same {i}", 1.0, MODEL_KEY, seed=i))
                for i in range(args.identical)]
        start = time.perf_counter()
        engine.generate(same)
        t_engine = time.perf_counter() - start
        t_batcher, _, occ3 = run_batcher(engine, same, args.slots, [0.0] * len(same))
        print(f"4) {args.identical} identical 1 s jobs: Engine.generate {t_engine:.1f} s, "
              f"batcher {t_batcher:.1f} s (occupancy {occ3:.2f}), "
              f"batcher/engine speed {t_engine / t_batcher:.2f}x")


if __name__ == "__main__":
    main()
