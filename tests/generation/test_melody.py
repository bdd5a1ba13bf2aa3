"""Following a melody: musicgen-melody's chroma path on a random-initialised model of its
architecture (``debug-melody``; audio is noise), run one job at a time by ``OneAtATime``."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from pydub import AudioSegment

from bot.config import Config
from bot.core.models import Destination, GenerationParams, JobState, MusicRequest
from bot.core.service import MusicService
from bot.media.clips import intake
from generation.batcher import ContinuousBatcher
from generation.engine import Engine, GenerationRequest, without_onednn
from generation.errors import GenerationError
from generation.seeding import row_generators
from generation.worker import OneAtATime
from tests.core import clip_files
from tests.generation.conftest import MAX_DURATION, MEMBER, BotWorker, RecordingFrontend
from tests.generation.test_clips import tone


@pytest.fixture(scope="module")
def melody_engine() -> Iterator[Engine]:
    yield Engine.load("debug-melody", "cpu", max_duration=MAX_DURATION, extend_stride_s=2.0)


def test_the_melody_model_has_chroma_conditioning_and_the_batcher_hands_it_on(
    melody_engine: Engine, engine: Engine,
) -> None:
    assert melody_engine.follows_melody and not engine.follows_melody
    with pytest.raises(GenerationError, match="melody models"):
        ContinuousBatcher(melody_engine, slots=2, kv_budget_mib=None)


def test_greedy_melody_equals_audiocraft_generate_with_chroma(melody_engine: Engine) -> None:
    melody, seed = tone(2.0), 5
    params = GenerationParams(prompt="hum", duration=2.0, model="debug-melody", seed=seed,
                              top_k=1)
    runner = OneAtATime(melody_engine)
    try:
        ours = runner.submit(GenerationRequest(params, melody_audio=melody)).result(300)
    finally:
        runner.close()
    model = melody_engine.model
    model.set_generation_params(use_sampling=True, top_k=1, duration=2.0,
                                cfg_coef=params.cfg_coef, extend_stride=2.0)
    random.seed(seed)  # Demucs's random shift; the engine seeds it from the job's seed
    with row_generators([seed], model.device):
        _, tokens = model.generate_with_chroma(["hum"], torch.from_numpy(melody.samples)[None],
                                               melody.sample_rate, return_tokens=True)
    with without_onednn():
        theirs = model.generate_audio(tokens)[0].numpy()
    assert np.array_equal(ours.samples, theirs)


def test_a_model_without_chroma_refuses_a_melody(engine: Engine) -> None:
    params = GenerationParams(prompt="hum", duration=1.0, model="debug", seed=1)
    with pytest.raises(GenerationError, match="cannot follow a melody"):
        engine.generate([GenerationRequest(params, melody_audio=tone(1.0))])


async def test_a_melody_job_renders_a_track_of_the_requested_length(
    service: MusicService, melody_engine: Engine, config: Config,
    frontend: RecordingFrontend, tmp_path,
) -> None:
    clip = await intake(config, "melody", clip_files.sine(tmp_path / "hum.ogg", 2.0),
                        "debug-melody")
    request = MusicRequest(prompt="whistled tune", duration=3, model="debug-melody", seed=3,
                           melody=str(clip.path))
    job = (await service.request_music(MEMBER, request, Destination("console", "@dm", "c",
                                                                   "alice"), "melody-1")).job
    await BotWorker(service, {"debug-melody": melody_engine}, config).run_until_idle()
    assert (await service.get_job(job.id)).state is JobState.DONE
    track = frontend.delivered[job.id]
    assert track.noise  # random weights: the audio is noise, only its shape is real
    assert AudioSegment.from_file(track.path).duration_seconds == pytest.approx(3, abs=0.1)


