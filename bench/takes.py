"""Takes: what N variations of one prompt cost batched (one request, ``takes: N``) vs rendered
one after another (N requests on a one-slot worker), relative to one track.

Everything goes through the real path: ``MusicService`` on a SQLite file (the group is
charged in one transaction), the real ``Worker`` (claim, continuous batcher, MP3 encode,
tempo/key/loudness analysis, storage) and the delivery stage. The model is
``bench.throughput``'s random-initialised musicgen-small LM with a tiny codec, on CPU.
A warm-up request (JIT, librosa's numba kernels) runs first and is not counted; one track
is timed before and after the others and the faster run counts.

Usage: ``python -m bench.takes [--takes 4] [--seconds 1.0]``
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.common import MEMBER, TimingFrontend, bench_config, open_service
from bench.throughput import MODEL_KEY, build_model
from bot.core.models import Destination, MusicRequest
from bot.core.service import MusicService
from generation.engine import Engine
from generation.worker import Worker

DESTINATION = Destination("console", MEMBER.community, "bench", MEMBER.user)


async def _drain(service: MusicService, engine: Engine) -> None:
    config = service.config
    worker = Worker(service.settlement, {MODEL_KEY: engine}, config)
    try:
        await worker.run_until_idle()
        await service.delivery.deliver_due()
    finally:
        await worker.stop()


async def timed(engine: Engine, takes: int, seconds: float, *, batched: bool) -> float:
    """Wall seconds from the request(s) to the last delivered track."""
    with tempfile.TemporaryDirectory() as tmp:
        config = bench_config(Path(tmp), MODEL_KEY, takes if batched else 1)
        service = await open_service(config, TimingFrontend())
        try:
            start = time.perf_counter()
            if batched:
                music = MusicRequest(prompt="synth pop", duration=seconds, model=MODEL_KEY,
                                     seed=7, takes=takes)
                await service.request_music(MEMBER, music, DESTINATION, "takes")
            else:
                for n in range(takes):
                    music = MusicRequest(prompt="synth pop", duration=seconds, model=MODEL_KEY,
                                         seed=7 + n)
                    await service.request_music(MEMBER, music, DESTINATION, f"take-{n}")
            await _drain(service, engine)
            return time.perf_counter() - start
        finally:
            await service.db.close()


async def run(takes: int, seconds: float) -> None:
    engine = Engine(build_model(), MODEL_KEY, "cpu", noise=True)
    await timed(engine, 1, seconds, batched=True)  # warm-up, not counted
    # one track before and after the others, the faster counts: a shared CPU is noisy
    first = await timed(engine, 1, seconds, batched=True)
    batched = await timed(engine, takes, seconds, batched=True)
    serial = await timed(engine, takes, seconds, batched=False)
    one = min(first, await timed(engine, 1, seconds, batched=True))
    print(f"{takes} takes of {seconds:g} s, random musicgen-small architecture, CPU, "
          "whole bot path (claim, decode, encode, analysis, delivery)")
    print(f"one track           {one:7.1f} s   1.00x")
    print(f"{takes} takes batched    {batched:7.1f} s   {batched / one:.2f}x one track "
          f"({batched / takes:.1f} s per take)")
    print(f"{takes} takes one by one {serial:7.1f} s   {serial / one:.2f}x one track "
          f"({serial / takes:.1f} s per take)")
    print(f"batched / one by one: {batched / serial:.2f} (a take costs "
          f"{100 * batched / serial:.0f}% of rendering it alone)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--takes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    asyncio.run(run(args.takes, args.seconds))


if __name__ == "__main__":
    main()
