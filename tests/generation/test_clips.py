"""Continuing a member's clip: the batcher primes the slot with the clip's tokens.

Greedy decoding must give exactly what audiocraft's own ``MusicGen.generate_continuation``
gives; a queued job with a stored clip renders the clip followed by the new seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydub import AudioSegment

from bot.config import Config
from bot.core.models import GenerationParams, JobState
from bot.core.service import MusicService
from bot.media.clips import intake
from generation.audio import Audio
from generation.batcher import ContinuousBatcher
from generation.engine import Engine, GenerationRequest, without_onednn
from generation.seeding import row_generators
from tests.core import clip_files
from tests.generation.conftest import BotWorker, RecordingFrontend, queue


def tone(seconds: float, rate: int = 32000) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    return Audio((0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)[None], rate)


def test_greedy_continuation_equals_audiocraft_generate_continuation(engine: Engine) -> None:
    # 1.6 s is whole EnCodec frames: the engine primes with the clip's last whole frames,
    # so this clip is primed in full, as audiocraft does.
    clip, new_s, seed = tone(1.6), 2.0, 11
    params = GenerationParams(prompt="jazz trio", duration=new_s, model="debug", seed=seed,
                              top_k=1)
    batcher = ContinuousBatcher(engine, slots=2, kv_budget_mib=None)
    try:
        ours = batcher.submit(GenerationRequest(params, continue_audio=clip)).result(120)
    finally:
        batcher.close()
    model = engine.model
    # audiocraft floors duration * frame_rate: whole frames, as the engine asks for them.
    total_s = (math.ceil((clip.duration_s + new_s) * model.frame_rate) + 0.01) / model.frame_rate
    model.set_generation_params(use_sampling=True, top_k=1, duration=total_s,
                                cfg_coef=params.cfg_coef, extend_stride=engine.extend_stride_s)
    with row_generators([seed], model.device), without_onednn():
        theirs = model.generate_continuation(torch.from_numpy(clip.samples)[None],
                                             clip.sample_rate, ["jazz trio"])[0].numpy()
    start = clip.samples.shape[-1]
    # The member gets the clip itself, then audiocraft's continuation of it.
    assert np.array_equal(ours.samples[:, :start], clip.samples)
    assert np.array_equal(ours.samples[:, start:], theirs[:, start:start + int(new_s * 32000)])


async def test_a_job_with_a_clip_renders_the_clip_then_the_new_seconds(
    service: MusicService, engine: Engine, config: Config, frontend: RecordingFrontend,
    tmp_path,
) -> None:
    clip = await intake(config, "audio", clip_files.sine(tmp_path / "riff.mp3", 2.0), "debug")
    job = await queue(service, "continue my riff", duration=3, audio=str(clip.path))
    assert job.price == (await queue(service, duration=3)).price  # the new seconds only
    await BotWorker(service, {"debug": engine}, config).run_until_idle()
    done = await service.get_job(job.id)
    assert done.state is JobState.DONE
    track = frontend.delivered[job.id]
    assert AudioSegment.from_file(track.path).duration_seconds == pytest.approx(5, abs=0.1)


async def test_a_clip_deleted_before_its_turn_fails_with_a_refund(
    service: MusicService, engine: Engine, config: Config, tmp_path,
) -> None:
    clip = await intake(config, "audio", clip_files.sine(tmp_path / "riff.wav", 1.0), "debug")
    job = await queue(service, duration=2, audio=str(clip.path))
    for copy in (clip.path, config.tracks_path / clip.path.name):  # swept, and from the store
        copy.unlink()
    await BotWorker(service, {"debug": engine}, config).run_until_idle()
    failed = await service.get_job(job.id)
    assert failed.state is JobState.FAILED and "attach it again" in (failed.error or "")
    assert failed.refunded == job.price
