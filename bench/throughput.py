"""Throughput: our batching worker vs. a naive bot that generates one prompt at a time.

The model is musicgen-small's real language model architecture (audiocraft builders, the
musicgen_lm + small config: 24 layers, dim 1024, 16 heads, 4 codebooks of 2048, delay
pattern, cross-attention), randomly initialised, with a LUT text conditioner of T5-base width
(768) in place of the T5 weights. The compression model is a tiny random SEANet/RVQ with
EnCodec 32 kHz's frame rate (50 Hz, 4 codebooks of 2048), not the real EnCodec: decoding is
per track in both modes, so it only scales the shared per-track cost.

Both modes run in this process on the same model; each includes the MP3 encode and storage.
Usage: ``python -m bench.throughput [--jobs 8] [--duration 1] [--max-batch 8]``
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from audiocraft.models import MusicGen, builders
from audiocraft.models.encodec import EncodecModel
from audiocraft.modules import SEANetDecoder, SEANetEncoder
from audiocraft.quantization import ResidualVectorQuantizer
from omegaconf import OmegaConf

from bench.common import TimingFrontend, bench_config, open_service, request, run_until_idle
from bot.config import Config
from bot.core.models import GenerationParams
from generation.audio import Audio, make_track
from generation.engine import Engine, without_onednn

MODEL_KEY = "bench-small"

SMALL_LM = {
    "device": "cpu",
    "dtype": "float32",
    "lm_model": "transformer_lm",
    "dataset": {"segment_duration": 30},
    "codebooks_pattern": {"modeling": "delay",
                          "delay": {"delays": [0, 1, 2, 3], "flatten_first": 0,
                                    "empty_initial": 0}},
    "transformer_lm": {
        "dim": 1024, "num_heads": 16, "num_layers": 24, "hidden_scale": 4, "n_q": 4,
        "card": 2048, "dropout": 0.0, "emb_lr": None, "activation": "gelu",
        "norm_first": True, "bias_ff": False, "bias_attn": False, "bias_proj": False,
        "past_context": None, "causal": True, "custom": False, "memory_efficient": True,
        "attention_as_float32": False, "layer_scale": None, "positional_embedding": "sin",
        "xpos": False, "checkpointing": "none", "weight_init": "gaussian",
        "depthwise_init": "current", "zero_bias_init": True, "norm": "layer_norm",
        "cross_attention": True, "qk_layer_norm": False, "qk_layer_norm_cross": False,
        "attention_dropout": None, "kv_repeat": 1, "two_step_cfg": False,
    },
    "conditioners": {
        "description": {"model": "lut",
                        "lut": {"n_bins": 32128, "dim": 768, "tokenizer": "noop"}},
    },
    "fuser": {"cross_attention_pos_emb": False, "cross_attention_pos_emb_scale": 1,
              "sum": [], "prepend": [], "cross": ["description"], "input_interpolate": []},
    "attribute_dropout": {},
    "classifier_free_guidance": {"training_dropout": 0.0, "inference_coef": 3.0},
}


def build_model() -> MusicGen:
    """Random-initialised musicgen-small LM + a tiny 50 Hz compression model."""
    torch.manual_seed(0)
    lm = builders.get_lm_model(OmegaConf.create(SMALL_LM)).eval()
    seanet = {"n_filters": 4, "n_residual_layers": 1, "dimension": 32, "ratios": [8, 5, 4, 4]}
    quantizer = ResidualVectorQuantizer(dimension=32, bins=2048, n_q=4)
    quantizer(torch.randn(8, 32, 128), 1)  # initialise the codebooks
    comp = EncodecModel(SEANetEncoder(**seanet), SEANetDecoder(**seanet), quantizer,
                        frame_rate=50, sample_rate=32000, channels=1).eval()
    return MusicGen(MODEL_KEY, comp, lm, max_duration=30)


def naive(model: MusicGen, prompts: list[str], seconds: float, config: Config) -> float:
    """What a simple bot does: one ``generate`` per prompt, one after the other.

    It gets the same oneDNN workaround as the engine, so the comparison is about batching.
    """
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        model.set_generation_params(duration=seconds)
        with without_onednn():
            wav = model.generate([prompt])
        audio = Audio(wav[0].float().numpy(), model.sample_rate)
        make_track(audio, 100_000 + i, "mp3", 10 * 1024 * 1024, config)
    return time.perf_counter() - start


async def batched(engine: Engine, prompts: list[str], seconds: float, config: Config) -> float:
    """Our path: queue every job through the service, then let the worker drain the queue."""
    frontend = TimingFrontend()
    service = await open_service(config, frontend)
    try:
        start = time.perf_counter()
        for i, prompt in enumerate(prompts):
            await request(service, MODEL_KEY, prompt, seconds, f"job-{i}")
        await run_until_idle(service, {MODEL_KEY: engine}, config)
        wall = time.perf_counter() - start
        assert len(frontend.delivered_at) == len(prompts), "not every job was delivered"
        return wall
    finally:
        await service.db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per track")
    parser.add_argument("--max-batch", type=int, default=8)
    args = parser.parse_args()

    model = build_model()
    engine = Engine(model, MODEL_KEY, "cpu", noise=True)
    prompts = [f"prompt number {i}: upbeat synth pop" for i in range(args.jobs)]
    with tempfile.TemporaryDirectory() as tmp:
        config = bench_config(Path(tmp), MODEL_KEY, args.max_batch)
        engine.generate([GenerationParams("warm-up", 0.2, MODEL_KEY, 0)])  # first-call costs
        t_naive = naive(model, prompts, args.duration, config)
        fresh = dataclasses.replace(config, database=str(Path(tmp) / "worker.sqlite3"))
        t_batch = asyncio.run(batched(engine, prompts, args.duration, fresh))
    params = sum(p.numel() for p in model.lm.parameters()) / 1e6
    audio = args.jobs * args.duration
    print(f"model: random musicgen-small LM ({params:.0f} M parameters), tiny 50 Hz codec, "
          f"{torch.get_num_threads()} torch threads")
    print(f"{args.jobs} jobs x {args.duration:g} s (max batch {args.max_batch})")
    print(f"naive sequential : {t_naive:7.1f} s  ({t_naive / audio:5.1f} s per audio second)")
    print(f"batched worker   : {t_batch:7.1f} s  ({t_batch / audio:5.1f} s per audio second)")
    print(f"speed-up         : {t_naive / t_batch:7.2f}x")


if __name__ == "__main__":
    main()
