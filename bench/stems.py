"""Stems vs. one track: what splitting a track costs next to making it, on CPU.

The track: musicgen-small's real LM architecture, random weights (see ``bench.throughput``),
one prompt of ``--duration`` seconds, encoded and stored as the worker does. The stems: the
real ``htdemucs`` architecture (HTDemucs, four sources, default sizes: the published model's
parameter count), random weights, run by the stems lane's own code on that stored track:
decode, resample to 44.1 kHz, ``apply_model`` with overlapping segments, resample back,
encode four MP3s and zip them. Random weights change what comes out, not what it costs.

Usage: ``python -m bench.stems [--duration 5]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.common import bench_config
from bench.throughput import MODEL_KEY, build_model
from generation.audio import Audio, make_track
from generation.engine import without_onednn
from generation.stems import DEBUG_SOURCES, Separator, make_stems, split_file


def real_size_separator() -> Separator:
    """HTDemucs with htdemucs' sizes and random weights (the weights cannot be downloaded)."""
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(0)
    model = HTDemucs(sources=list(DEBUG_SOURCES)).eval()
    return Separator(model, "htdemucs-random", "cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of audio")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        config = bench_config(Path(tmp), MODEL_KEY, 1)
        model = build_model()
        model.set_generation_params(duration=0.2)
        with without_onednn():
            model.generate(["warm-up"])  # first-call costs are not the track's
        start = time.perf_counter()
        model.set_generation_params(duration=args.duration)
        with without_onednn():
            wav = model.generate(["upbeat synth pop with a heavy bass line"])
        track = make_track(Audio(wav[0].float().numpy(), model.sample_rate), 1, "mp3",
                           10 * 1024 * 1024, config, noise=True)
        t_track = time.perf_counter() - start

        separator = real_size_separator()
        split_file(separator, track.path)  # warm-up, like the track's
        start = time.perf_counter()
        stems = split_file(separator, track.path)
        t_split = time.perf_counter() - start
        made = make_stems(stems, 2, "mp3", 10 * 1024 * 1024, config, noise=True)
        t_stems = time.perf_counter() - start

    params = sum(p.numel() for p in separator.model.parameters()) / 1e6
    print(f"{args.duration:g} s of audio, CPU, {torch.get_num_threads()} torch threads")
    print(f"one track (musicgen-small LM arch.) : {t_track:7.1f} s")
    print(f"stems (htdemucs arch., {params:.0f} M params): {t_stems:7.1f} s "
          f"(separation {t_split:.1f} s, encode + zip {t_stems - t_split:.1f} s, "
          f"zip {made.size_bytes / 1024:.0f} KiB)")
    print(f"stems / track                        : {t_stems / t_track:7.2f}x")


if __name__ == "__main__":
    main()
