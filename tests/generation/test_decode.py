"""The slot decode loop and the continuous batcher on audiocraft's real modules.

Greedy decoding (``top_k=1``) must give exactly what audiocraft's own ``MusicGen.generate``
gives (through ``Engine.generate``): the proof that our loop is the model. Sampled decoding
must give a seed the same audio whatever its batch-mates.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future

import numpy as np
import pytest
import torch
from audiocraft.models import MusicGen, builders
from audiocraft.models.encodec import EncodecModel
from audiocraft.modules import SEANetDecoder, SEANetEncoder
from audiocraft.quantization import ResidualVectorQuantizer
from omegaconf import OmegaConf

from bot.core.models import GenerationParams
from generation import decode
from generation.audio import Audio
from generation.batcher import ContinuousBatcher
from generation.decode import Sampling, SlotDecoder, make_generator
from generation.engine import Engine, GenerationRequest
from generation.errors import GenerationError, GenerationOutOfMemory, GenerationStopped
from tests.generation.conftest import MAX_DURATION

GREEDY = {"top_k": 1}


def request(seed: int, prompt: str = "calm piano", duration: float = 1.0,
            previous: Audio | None = None, **sampling: float) -> GenerationRequest:
    params = GenerationParams(prompt=prompt, duration=duration, model="debug", seed=seed,
                              **sampling)  # type: ignore[arg-type]
    return GenerationRequest(params, continue_audio=previous)


@pytest.fixture
def batcher(engine: Engine) -> Iterator[ContinuousBatcher]:
    b = ContinuousBatcher(engine, slots=4, kv_budget_mib=None)
    yield b
    b.close()


def results(futures: list[Future[Audio]]) -> list[np.ndarray]:
    return [f.result(timeout=120).samples for f in futures]


# -- (a) greedy equality with audiocraft ----------------------------------------------------------
def test_greedy_tokens_equal_audiocraft_generate(engine: Engine,
                                                 batcher: ContinuousBatcher) -> None:
    for req in (request(1, **GREEDY), request(2, "rock", 2.0, cfg_coef=1.5, **GREEDY)):
        ours = batcher.submit(req).result(timeout=120)
        theirs = engine.generate([req])[0]
        assert np.array_equal(ours.samples, theirs.samples)


def small_musicgen(layers: int = 2) -> MusicGen:
    """musicgen-small's architecture (builders, SDPA attention, gelu) at toy width."""
    from bench.throughput import SMALL_LM

    cfg = OmegaConf.create(SMALL_LM)
    cfg.transformer_lm.update({"dim": 64, "num_heads": 4, "num_layers": layers, "card": 64})
    cfg.conditioners.description.lut.update({"n_bins": 512, "dim": 32})
    torch.manual_seed(0)
    lm = builders.get_lm_model(cfg).eval()
    seanet = {"n_filters": 2, "n_residual_layers": 1, "dimension": 8, "ratios": [8, 5, 4, 4]}
    quantizer = ResidualVectorQuantizer(dimension=8, bins=64, n_q=4)
    quantizer(torch.randn(4, 8, 64), 1)
    comp = EncodecModel(SEANetEncoder(**seanet), SEANetDecoder(**seanet), quantizer,
                        frame_rate=50, sample_rate=32000, channels=1).eval()
    return MusicGen("small-arch", comp, lm, max_duration=30)


@pytest.fixture(params=[True, False], ids=["onednn", "mkl"])
def kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run a test with the loop's oneDNN matmuls and with audiocraft's own (MKL) ones."""
    monkeypatch.setattr(decode, "ONEDNN_LINEAR", request.param)
    return bool(request.param)


def test_greedy_equality_on_the_musicgen_small_architecture(kernels: bool) -> None:
    model = small_musicgen()
    model.set_generation_params(top_k=1, duration=1.0, cfg_coef=3.0)
    _, reference = model.generate(["deep house"], return_tokens=True)
    decoder = SlotDecoder(model)
    attributes, _ = model._prepare_tokens_and_attributes(["deep house"], None)
    slot = decoder.open(decoder.condition(attributes[0]), Sampling(1.0, 1, 0.0, 3.0),
                        make_generator(0, "cpu"), reference.shape[-1])
    while not slot.done:
        decoder.step([slot])
    assert torch.equal(slot.codes(), reference[0])


# -- (b) same seed, same audio --------------------------------------------------------------------
def test_a_rows_logits_are_bitwise_the_same_alone_and_batched(kernels: bool) -> None:
    # The root of seed invariance: batch-mates (other lengths, steps, prompts, settings) do not
    # change a single bit of a row's logits. With MKL and without the 4-row floor of the
    # matmuls (decode.MIN_ROWS = 1) this fails.
    model = small_musicgen()
    decoder = SlotDecoder(model)

    def slot(text: str, frames: int, steps: int, prompt: bool = False):
        attributes, _ = model._prepare_tokens_and_attributes([text], None)
        codes = torch.randint(0, 64, (4, 5)) if prompt else None
        s = decoder.open(decoder.condition(attributes[0]), Sampling(1.0, 0, 0.0, 2.0),
                         make_generator(len(text), "cpu"), frames, codes)
        for _ in range(steps):
            decoder.step([s])
        return s

    target = slot("deep house", 40, 7)
    alone = decoder.logits([target])
    mates = [slot("rock", 30, 2), target, slot("jazz", 60, 11, prompt=True)]
    assert torch.equal(decoder.logits(mates)[1], alone[0])


def test_same_seed_same_audio_alone_and_in_a_mixed_batch(batcher: ContinuousBatcher) -> None:
    job = request(42, "lofi beat", 1.5, temperature=0.9, top_k=50)
    alone = batcher.submit(job).result(timeout=120).samples
    mates = [
        request(1, "rock", 2.0, temperature=1.3, top_k=0, top_p=0.9),
        job,
        request(3, "jazz", 0.6, cfg_coef=5.0),
        request(4, "metal", 1.2, temperature=0.5, top_k=250),
    ]
    mixed = results([batcher.submit(r) for r in mates])
    assert np.array_equal(alone, mixed[1])
    other_seed = batcher.submit(request(43, "lofi beat", 1.5, temperature=0.9, top_k=50))
    assert not np.array_equal(alone, other_seed.result(timeout=120).samples)
    assert [m.shape[-1] for m in mixed] == [round(d * 32000) for d in (2.0, 1.5, 0.6, 1.2)]


# -- (c) cancel frees a slot, (d) joining a running batch -----------------------------------------
def test_stop_frees_the_slot_for_a_waiting_job(engine: Engine) -> None:
    batcher = ContinuousBatcher(engine, slots=1, kv_budget_mib=None)
    try:
        stop = threading.Event()
        steps: list[float] = []

        def progress(fraction: float) -> None:
            steps.append(fraction)
            if len(steps) == 3:
                stop.set()

        long_job = batcher.submit(request(1, duration=3.0), on_progress=progress,
                                  should_stop=stop.is_set)
        waiting = batcher.submit(request(2))
        assert batcher.free_slots == 0
        with pytest.raises(GenerationStopped):
            long_job.result(timeout=120)
        assert len(steps) == 3  # stopped at the next step, not at the end of the track
        assert waiting.result(timeout=120).duration_s == pytest.approx(1.0)
        assert batcher.free_slots == 1
    finally:
        batcher.close()


def test_a_job_joins_a_running_batch(engine: Engine, batcher: ContinuousBatcher) -> None:
    alone = batcher.submit(request(7, "synthwave")).result(timeout=120).samples
    first_steps = threading.Event()
    first_progress: list[float] = []

    def on_first(fraction: float) -> None:
        first_progress.append(fraction)
        if len(first_progress) == 10:
            first_steps.set()

    long_job = batcher.submit(request(6, duration=3.0), on_progress=on_first)
    assert first_steps.wait(timeout=120)
    joined = batcher.submit(request(7, "synthwave")).result(timeout=120)
    assert not long_job.done()  # it joined while the long job was decoding
    assert np.array_equal(joined.samples, alone)
    long_job.result(timeout=120)
    assert first_progress == sorted(first_progress) and first_progress[-1] == 1.0


# -- (e) long track, (g) extension --------------------------------------------------------------
def test_long_track_across_windows_in_a_mixed_batch(engine: Engine,
                                                    batcher: ContinuousBatcher) -> None:
    long = request(5, "ambient", MAX_DURATION * 2.2, **GREEDY)
    mates = [request(1, duration=0.8), long, request(2, "drums", 2.5, temperature=1.2)]
    ours = results([batcher.submit(r) for r in mates])[1]
    theirs = engine.generate([long])[0].samples  # audiocraft's own sliding window
    assert ours.shape[-1] == round(MAX_DURATION * 2.2 * engine.sample_rate)
    assert np.array_equal(ours, theirs)


def test_extension_row_continues_the_given_audio(engine: Engine,
                                                 batcher: ContinuousBatcher) -> None:
    first = batcher.submit(request(9, duration=2.0)).result(timeout=120)
    extension = request(10, duration=1.5, previous=first, **GREEDY)
    mates = [request(1, "techno", 1.0), extension, request(2, "folk", 0.5, top_p=0.8)]
    ours = results([batcher.submit(r) for r in mates])[1]
    theirs = engine.generate([extension])[0].samples
    assert np.array_equal(ours, theirs)
    assert np.array_equal(ours[:, : first.samples.shape[1]], first.samples)
    assert ours.shape[-1] == first.samples.shape[-1] + round(1.5 * engine.sample_rate)
    # An extension longer than the window: prompt first, then the slot re-primes itself.
    long_extension = request(11, duration=MAX_DURATION * 1.5, previous=first, **GREEDY)
    ours_long = batcher.submit(long_extension).result(timeout=120).samples
    assert np.array_equal(ours_long, engine.generate([long_extension])[0].samples)


# -- (f) admission by memory budget -------------------------------------------------------------
def test_budget_refuses_to_over_admit(engine: Engine) -> None:
    probe = ContinuousBatcher(engine, slots=8, kv_budget_mib=None)
    one_job = probe._bytes_for(request(0, duration=2.0))
    probe.close()
    budget_mib = 2.5 * one_job / (1024 * 1024)  # room for two 2 s jobs, not three
    batcher = ContinuousBatcher(engine, slots=8, kv_budget_mib=budget_mib)
    try:
        running: set[int] = set()
        most = [0]
        lock = threading.Lock()

        def tracker(seed: int):
            def on_progress(fraction: float) -> None:
                with lock:
                    if fraction < 1.0:
                        running.add(seed)
                    else:
                        running.discard(seed)
                    most[0] = max(most[0], len(running))
            return on_progress

        futures = [batcher.submit(request(s, duration=2.0), on_progress=tracker(s))
                   for s in range(5)]
        assert all(f.result(timeout=120).duration_s == pytest.approx(2.0) for f in futures)
        assert most[0] == 2
        assert batcher.mean_occupancy <= 2.0
    finally:
        batcher.close()
    tiny = ContinuousBatcher(engine, slots=8, kv_budget_mib=0.5 * one_job / (1024 * 1024))
    try:
        with pytest.raises(GenerationError, match="budget"):
            tiny.submit(request(9, duration=2.0)).result(timeout=5)
        short = tiny.submit(request(9, duration=0.5)).result(timeout=60)
        assert short.duration_s == pytest.approx(0.5)
    finally:
        tiny.close()


def test_close_fails_waiting_jobs(engine: Engine) -> None:
    batcher = ContinuousBatcher(engine, slots=1, kv_budget_mib=None)
    running = batcher.submit(request(1, duration=60.0))
    waiting = batcher.submit(request(2))
    batcher.close()
    for future in (running, waiting):
        with pytest.raises(GenerationError):
            future.result(timeout=5)


def test_fault_at_a_jobs_first_step_fails_only_that_job(engine: Engine,
                                                        batcher: ContinuousBatcher) -> None:
    def hook(requests: list[GenerationRequest]) -> None:
        if requests[0].params.seed == 13:
            raise torch.OutOfMemoryError("simulated")

    engine.fault_hook = hook
    doomed = batcher.submit(request(13))
    fine = batcher.submit(request(14))
    with pytest.raises(GenerationOutOfMemory):
        doomed.result(timeout=60)
    assert fine.result(timeout=60).duration_s == pytest.approx(1.0)


def test_a_stopped_waiting_job_never_starts(engine: Engine) -> None:
    batcher = ContinuousBatcher(engine, slots=1, kv_budget_mib=None)
    try:
        started: list[float] = []
        first = batcher.submit(request(1, duration=2.0))
        queued = batcher.submit(request(2), on_progress=started.append, should_stop=lambda: True)
        with pytest.raises(GenerationStopped):
            queued.result(timeout=60)
        assert started == []
        first.result(timeout=60)
    finally:
        batcher.close()


def test_kv_cache_is_allocated_once_per_slot() -> None:
    # Memory a GPU would notice: decoding writes into the slot's one cache tensor; no step and
    # no re-prime with a shorter prompt allocates another.
    model = small_musicgen()
    decoder = SlotDecoder(model)
    attributes, _ = model._prepare_tokens_and_attributes(["ambient"], None)
    cross = decoder.condition(attributes[0])
    slot = decoder.open(cross, Sampling(), make_generator(1, "cpu"), 30)
    address = slot.cache.data_ptr()
    while not slot.done:
        decoder.step([slot])
        assert slot.cache.data_ptr() == address
    assert slot.cache.shape[4] == 30 + decoder.spec.max_delay
    tail = slot.codes()[:, 10:]
    again = decoder.open(cross, Sampling(), make_generator(1, "cpu"), 30, tail, cache=slot.cache)
    assert again.cache.data_ptr() == address
