"""The MusicGen engine: load a model once, generate batches of tracks with it.

``Engine.load(source, device)`` accepts a hub id (``facebook/musicgen-small`` …), a local
checkpoint folder (``state_dict.bin`` + ``compression_state_dict.bin``) or ``debug`` (a tiny
random model built here, no network; its output is noise). ``Engine.generate`` is synchronous
and slow: the worker calls it in a thread. One engine serves one generate call at a time (a
lock guards the model, whose generation parameters are mutable state), so throughput comes from
putting several jobs into one call.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from audiocraft.data.audio_utils import convert_audio
from audiocraft.models import MusicGen
from audiocraft.models.builders import get_debug_compression_model
from audiocraft.models.lm import LMModel
from audiocraft.modules.codebooks_patterns import DelayedPatternProvider
from audiocraft.modules.conditioners import (
    ConditionFuser,
    ConditioningAttributes,
    ConditioningProvider,
    LUTConditioner,
)

from bot.core.models import GenerationParams
from generation.audio import Audio
from generation.errors import (
    GenerationError,
    GenerationOutOfMemory,
    GenerationStopped,
    ModelUnavailable,
)
from generation.progress import WindowProgress, safe_duration, window_steps
from generation.seeding import row_generators

log = logging.getLogger(__name__)

MAX_TOTAL_S = 300.0
"""Longest track the engine makes (sliding window beyond the model's ``max_duration``)."""
CONTEXT_S = 10.0
"""Seconds of the previous track fed back as the prompt when extending a track."""
CHECKPOINT_FILES = ("state_dict.bin", "compression_state_dict.bin")

ProgressFn = Callable[[float], None]
StopFn = Callable[[], bool]


@dataclass(frozen=True)
class GenerationRequest:
    """One row of a batch: what to make, and for an extension the audio to continue."""

    params: GenerationParams
    continue_audio: Audio | None = None
    duration_s: float | None = None
    """Seconds of new audio; defaults to ``params.duration`` (the worker adds the fade it
    trims off the previous track when extending)."""
    melody_audio: Audio | None = None
    """A clip whose melody (chroma) conditions the row: melody models only."""

    @property
    def new_seconds(self) -> float:
        return self.params.duration if self.duration_s is None else self.duration_s


class _Stop(Exception):
    """Raised from audiocraft's progress callback to abandon a generate call."""


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; other values pass through."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def build_debug_model(device: str, max_duration: float = 30.0) -> MusicGen:
    """audiocraft's debug MusicGen with a no-download tokenizer and fixed (seeded) weights.

    audiocraft's own ``get_pretrained('debug')`` uses the ``whitespace`` tokenizer, which needs
    spaCy's ``en_core_web_sm`` download; ``noop`` hashes the whole text instead. The weights are
    drawn under a fixed seed so the same seed gives the same noise after a restart too.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        comp = get_debug_compression_model(device)
        conditioner = LUTConditioner(n_bins=128, dim=16, output_dim=16, tokenizer="noop")
        provider = ConditioningProvider({"description": conditioner}, device=device)
        fuser = ConditionFuser(
            {"cross": ["description"], "prepend": [], "sum": [], "input_interpolate": []}
        )
        lm = LMModel(
            DelayedPatternProvider(n_q=4), provider, fuser, n_q=4, card=400, dim=16,
            num_heads=4, custom=True, num_layers=2, cross_attention=True, causal=True,
        )
        lm = lm.to(device).eval()
    # MusicGen's constructor checks its default 18 s stride against max_duration: build at
    # 30 s, then shrink the window.
    model = MusicGen("debug", comp, lm, max_duration=30.0)
    model.max_duration = max_duration
    return model


DEBUG_SOURCES = ("debug", "debug-melody")
"""Sources built here with random weights (their output is noise)."""
STEM_SOURCES = ("drums", "bass", "other", "vocals")
"""htdemucs's sources, in its order (the chroma conditioner keeps all but drums and bass)."""


def build_debug_melody_model(device: str, max_duration: float = 30.0) -> MusicGen:
    """``musicgen-melody``'s architecture at toy size with random, seeded weights.

    As ``facebook/musicgen-melody``: text by cross-attention, the melody's chroma (from the
    clip with drums and bass removed by Demucs) *prepended* to the sequence. audiocraft's
    ``ChromaStemConditioner`` loads the published ``htdemucs`` weights, which cannot be
    downloaded here: a random-initialised ``HTDemucs`` of the same sources stands in, built
    while the conditioner is constructed. Its output (and so the chroma) is noise.
    """
    from audiocraft.modules.conditioners import ChromaStemConditioner

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        comp = get_debug_compression_model(device)
        with _random_htdemucs():
            chroma = ChromaStemConditioner(
                output_dim=16, sample_rate=int(comp.sample_rate), n_chroma=12, radix2_exp=12,
                duration=max_duration, match_len_on_eval=True, device=device, argmax=True)
        conditioners = {
            "description": LUTConditioner(n_bins=128, dim=16, output_dim=16, tokenizer="noop"),
            "self_wav": chroma,
        }
        provider = ConditioningProvider(conditioners, device=device)  # type: ignore[arg-type]
        fuser = ConditionFuser({"cross": ["description"], "prepend": ["self_wav"], "sum": [],
                                "input_interpolate": []})
        lm = LMModel(
            DelayedPatternProvider(n_q=4), provider, fuser, n_q=4, card=400, dim=16,
            num_heads=4, custom=True, num_layers=2, cross_attention=True, causal=True,
        )
        lm = lm.to(device).eval()
    model = MusicGen("debug-melody", comp, lm, max_duration=30.0)
    model.max_duration = max_duration
    return model


@contextlib.contextmanager
def _random_htdemucs() -> Iterator[None]:
    """While active, ``demucs.pretrained.get_model`` builds a small random HTDemucs."""
    from demucs import pretrained
    from demucs.htdemucs import HTDemucs

    def build(name: str, repo: object = None) -> HTDemucs:
        return HTDemucs(sources=list(STEM_SOURCES), channels=8, t_layers=1).eval()

    original = pretrained.get_model
    pretrained.get_model = build  # type: ignore[assignment]
    try:
        yield
    finally:
        pretrained.get_model = original


def load_model(source: str, device: str) -> MusicGen:
    """Load ``source`` (hub id or checkpoint folder) with audiocraft's loaders.

    Raises:
        ModelUnavailable: missing folder/files, or a hub model not cached and no network.
    """
    looks_like_path = os.sep in source and not _looks_like_hub_id(source)
    if os.path.isdir(source) or looks_like_path or source.startswith("."):
        _check_folder(source)
    try:
        return MusicGen.get_pretrained(source, device=device)
    except Exception as exc:  # audiocraft/hf raise many kinds; classify them for the member
        if _is_offline(exc):
            raise ModelUnavailable(
                source,
                "it is not in the local Hugging Face cache and the hub cannot be reached "
                "(no network). Use the `debug` model (random weights, output is noise) or a "
                "local checkpoint folder holding state_dict.bin and compression_state_dict.bin.",
            ) from exc
        raise ModelUnavailable(source, f"{type(exc).__name__}: {exc}") from exc


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not os.path.exists(source)


def _check_folder(source: str) -> None:
    if not os.path.isdir(source):
        raise ModelUnavailable(source, "no such folder.")
    missing = [f for f in CHECKPOINT_FILES if not os.path.isfile(os.path.join(source, f))]
    if missing:
        raise ModelUnavailable(source, f"the folder lacks {', '.join(missing)}.")


def _is_offline(exc: BaseException) -> bool:
    """True when ``exc`` (or its cause chain) says the hub could not be reached."""
    import huggingface_hub.errors as hf_errors
    import requests

    offline_types: tuple[type[BaseException], ...] = (
        hf_errors.LocalEntryNotFoundError,
        hf_errors.OfflineModeIsEnabled,
        requests.ConnectionError,
        requests.Timeout,
        ConnectionError,
        TimeoutError,
    )
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).lower()
        if isinstance(current, offline_types) or "couldn't connect" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


class Engine:
    """A loaded MusicGen model plus the bookkeeping the worker needs.

    ``noise`` is true for random-initialised models (``debug``): their output is noise.
    ``fault_hook``, when set, is called on the generating thread at the first decoding step of
    every call with the batch; anything it raises behaves as if the model raised it (tests use
    it to simulate out-of-memory and crashes on the real code path).
    """

    # Alike by shape only to other constructors (duplicates): plain assignments, nothing to share.
    def __init__(
        self,
        model: MusicGen,
        source: str,
        device: str,
        *,
        noise: bool = False,
        extend_stride_s: float = 18.0,
        load_s: float = 0.0,
    ) -> None:
        if not 0 < extend_stride_s < model.max_duration:
            raise GenerationError(
                f"generation.extend_stride_s ({extend_stride_s:g}) must be above 0 and below "
                f"the model's max duration ({model.max_duration:g} s)."
            )
        self.model = model
        self.source = source
        self.device = device
        self.noise = noise
        self.extend_stride_s = extend_stride_s
        self.load_s = load_s
        self.fault_hook: Callable[[Sequence[GenerationRequest]], None] | None = None
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        source: str,
        device: str = "auto",
        *,
        max_duration: float | None = None,
        extend_stride_s: float = 18.0,
    ) -> Engine:
        """Load ``source`` on ``device`` (slow, synchronous; call once at start-up).

        ``max_duration`` overrides the model's window length (the debug model defaults to
        30 s; tests use a few seconds to exercise the sliding window cheaply).

        Raises:
            ModelUnavailable: the model cannot be loaded; the message says what to do.
        """
        device = resolve_device(device)
        start = time.perf_counter()
        if source == "debug":
            model = build_debug_model(device, max_duration or 30.0)
        elif source == "debug-melody":
            model = build_debug_melody_model(device, max_duration or 30.0)
        else:
            model = load_model(source, device)
            if max_duration is not None:
                model.max_duration = min(model.max_duration, max_duration)
        load_s = time.perf_counter() - start
        log.info("loaded model %s on %s in %.1f s", source, device, load_s)
        debug = source in DEBUG_SOURCES
        stride = min(extend_stride_s, model.max_duration * 0.6) if debug else extend_stride_s
        return cls(model, source, device, noise=debug, extend_stride_s=stride,
                   load_s=load_s)

    @property
    def sample_rate(self) -> int:
        return int(self.model.sample_rate)

    @property
    def channels(self) -> int:
        return int(self.model.audio_channels)

    @property
    def max_duration(self) -> float:
        return float(self.model.max_duration)

    def generate(
        self,
        batch: Sequence[GenerationRequest | GenerationParams],
        on_progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> list[Audio]:
        """Generate one track per row in a single model call; returns them in order.

        All rows must share sampling settings and duration (the core batches by
        ``batch_key``). Rows with a seed draw from their own generator, so a row's audio does
        not depend on its batch-mates. Extensions return the previous audio plus the new part.
        ``on_progress(fraction)`` and ``should_stop()`` are called on this thread.

        Raises:
            GenerationStopped: ``should_stop()`` became true.
            GenerationOutOfMemory: the accelerator ran out of memory (try a smaller batch).
            GenerationError: invalid batch (mixed settings, too long).
        """
        requests = [b if isinstance(b, GenerationRequest) else GenerationRequest(b) for b in batch]
        self._check_batch(requests)
        with self._lock:
            try:
                return self._generate_locked(requests, on_progress, should_stop)
            except _Stop:
                raise GenerationStopped() from None
            except torch.OutOfMemoryError:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                raise GenerationOutOfMemory(len(requests)) from None
            finally:
                self.model.set_custom_progress_callback(None)

    def _check_batch(self, requests: list[GenerationRequest]) -> None:
        if not requests:
            raise GenerationError("Nothing to generate.")
        first = requests[0]
        settings = _sampling(first.params), first.new_seconds, first.continue_audio is None
        for r in requests[1:]:
            if (_sampling(r.params), r.new_seconds, r.continue_audio is None) != settings:
                raise GenerationError("Jobs in one batch must share duration and sampling.")
        if not 0 < first.new_seconds <= MAX_TOTAL_S:
            raise GenerationError(f"Tracks can be at most {MAX_TOTAL_S:g} s long.")

    def _generate_locked(
        self,
        requests: list[GenerationRequest],
        on_progress: ProgressFn | None,
        should_stop: StopFn | None,
    ) -> list[Audio]:
        p = requests[0].params
        new_s = requests[0].new_seconds
        prompt, tail_s = self._continuation_prompt(requests, new_s)
        fr = self.model.frame_rate
        prompt_frames = round(tail_s * fr) if prompt is not None else 0
        total_s = safe_duration(tail_s + new_s, self.max_duration, self.extend_stride_s, fr,
                                prompt_frames)
        self.model.set_generation_params(
            use_sampling=True, top_k=p.top_k, top_p=p.top_p, temperature=p.temperature,
            duration=total_s, cfg_coef=p.cfg_coef, extend_stride=self.extend_stride_s,
        )
        plan = window_steps(total_s, self.max_duration, self.extend_stride_s, fr, prompt_frames)
        progress = WindowProgress(plan, on_progress)
        self.model.set_custom_progress_callback(
            self._callback(progress, should_stop, requests)
        )
        texts = [r.params.text for r in requests]
        # The two steps of MusicGen.generate/generate_continuation (audiocraft 1.3), split so
        # each row is decoded on its own: batched decoding rounds differently per batch size,
        # and a seed must give the same audio with or without batch-mates.
        with self._conv_flags():
            attributes, prompt_tokens = self._prepare(texts, prompt, requests)
        # Melody models: Demucs shifts the clip by a random offset (python's `random`) while
        # the conditioning is computed; seeded by the first row so a seed keeps its track.
        with (row_generators([r.params.seed for r in requests], self.model.device),
              _python_random(p.seed)):
            tokens = self.model._generate_tokens(attributes, prompt_tokens, progress=True)
        with self._conv_flags():
            wavs = [self.model.generate_audio(tokens[i : i + 1])[0] for i in range(len(tokens))]
        progress.finish()
        return self._to_audio(wavs, requests, tail_s, new_s)

    def _prepare(
        self, texts: list[str], prompt: torch.Tensor | None, requests: list[GenerationRequest],
    ) -> tuple[list[ConditioningAttributes], torch.Tensor | None]:
        """audiocraft's conditioning and prompt tokens; with melodies, as
        ``MusicGen.generate_with_chroma`` passes them (converted to the model's rate)."""
        if all(r.melody_audio is None for r in requests):
            return self.model._prepare_tokens_and_attributes(texts, prompt)
        if not self.follows_melody:
            raise GenerationError(f"The model {self.source} cannot follow a melody.")
        melodies: list[torch.Tensor | None] = [
            None if r.melody_audio is None else self._as_model_audio(r.melody_audio).to(
                self.model.device) for r in requests]
        return self.model._prepare_tokens_and_attributes(texts, prompt, melody_wavs=melodies)

    @property
    def follows_melody(self) -> bool:
        """Whether the model has chroma (melody) conditioning (``musicgen-melody``)."""
        return "self_wav" in self.model.lm.condition_provider.conditioners

    def _callback(
        self,
        progress: WindowProgress,
        should_stop: StopFn | None,
        requests: list[GenerationRequest],
    ) -> Callable[[int, int], None]:
        def callback(generated: int, total: int) -> None:
            if progress.steps == 0 and self.fault_hook is not None:
                self.fault_hook(requests)
            if should_stop is not None and should_stop():
                raise _Stop()
            progress.step(total)

        return callback

    def _continuation_prompt(
        self, requests: list[GenerationRequest], new_s: float
    ) -> tuple[torch.Tensor | None, float]:
        """The tail of each previous track, [B, C, T] at the model's rate, and its length."""
        if requests[0].continue_audio is None:
            return None, 0.0
        previous = [self._as_model_audio(r.continue_audio) for r in requests]  # type: ignore[arg-type]
        shortest = min(t.shape[-1] for t in previous) / self.sample_rate
        room = max(self.max_duration - new_s, self.max_duration - self.extend_stride_s)
        frames = int(min(shortest, CONTEXT_S, room) * self.model.frame_rate)
        if frames < 1:
            raise GenerationError("The track to extend is too short.")
        tail_s = frames / self.model.frame_rate
        n = round(tail_s * self.sample_rate)
        return torch.stack([t[:, -n:] for t in previous]), tail_s

    def _as_model_audio(self, audio: Audio) -> torch.Tensor:
        wav = torch.from_numpy(np.ascontiguousarray(audio.samples, dtype=np.float32))
        return convert_audio(wav, audio.sample_rate, self.sample_rate, self.channels)

    def _conv_flags(self) -> contextlib.AbstractContextManager[None]:
        """On CPU, run EnCodec's convolutions without oneDNN.

        oneDNN builds a kernel per new input length, which for some lengths takes seconds
        (measured 6-10 s for a 7 s track on this machine) - every new duration would pay it.
        The plain kernels take milliseconds here.
        """
        if self.model.device.type == "cpu":
            return without_onednn()
        return contextlib.nullcontext()

    def _to_audio(
        self, wavs: list[torch.Tensor], requests: list[GenerationRequest], tail_s: float,
        new_s: float,
    ) -> list[Audio]:
        data = [w.detach().float().cpu().numpy() for w in wavs]
        start = round(tail_s * self.sample_rate)
        end = start + math.ceil(new_s * self.sample_rate)
        out = []
        for row, request in zip(data, requests, strict=True):
            samples = row[:, start:end]
            if request.continue_audio is not None:
                before = self._as_model_audio(request.continue_audio).numpy()
                samples = np.concatenate([before, samples], axis=-1)
            out.append(Audio(np.ascontiguousarray(samples, dtype=np.float32), self.sample_rate))
        return out


@contextlib.contextmanager
def _python_random(seed: int) -> Iterator[None]:
    """Seed python's global ``random`` for a block, then restore its state."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


@contextlib.contextmanager
def without_onednn() -> Iterator[None]:
    """Run CPU convolutions with torch's plain kernels (see ``Engine._conv_flags``).

    A process-wide switch (torch has no per-thread one); only convolutions read it.
    """
    previous = torch.backends.mkldnn.enabled
    # torch's stubs see the class-level ContextProp descriptor; the module attribute is a bool.
    torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous


def _sampling(p: GenerationParams) -> tuple[float, int, float, float]:
    return (p.temperature, p.top_k, p.top_p, p.cfg_coef)
