"""Stems: split a stored track into drums, bass, other and vocals with Demucs v4.

:class:`Separator` wraps one Demucs model: ``htdemucs`` (or any ``demucs.pretrained`` name)
loaded with demucs' own loader, or ``debug``, a random-initialised
:class:`demucs.htdemucs.HTDemucs` built in-process (weights cannot be downloaded everywhere:
its stems are noise, and the track says so). :meth:`Separator.separate` resamples the track to
the model's rate (44.1 kHz), runs :func:`demucs.apply.apply_model` segment by segment with
overlap (a stop check and progress between segments) and resamples each stem back.
:func:`make_stems` encodes each stem in the track's format and zips them.

The worker runs stems in their own lane (:class:`StemsLane`): one separation at a time on
its own thread, beside the music decode loop, never in a music slot.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import julius
import numpy as np
import torch

from bot.config import Config
from bot.core.models import STEMS_BATCH_PREFIX, Track
from generation.audio import Audio, encode, load_track, tracks_dir
from generation.errors import (
    GenerationError,
    GenerationOutOfMemory,
    GenerationStopped,
    ModelUnavailable,
    TrackTooLarge,
)

log = logging.getLogger(__name__)

DEBUG = "debug"
DEBUG_SOURCES = ["drums", "bass", "other", "vocals"]
OVERLAP = 0.25
"""Share of each segment that overlaps the next (demucs' default): the seams are crossfaded."""
ZIP_HEADROOM = 4096
"""Bytes the zip's own headers take beyond its four (stored, not re-compressed) stems."""


def build_debug_separator(device: str = "cpu") -> Any:
    """A small random-initialised HTDemucs (same code path as the real one; output is noise).

    Fewer channels and one transformer layer keep a CPU test fast; the weights are drawn under
    a fixed seed so the same input gives the same noise.
    """
    from demucs.htdemucs import HTDemucs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = HTDemucs(sources=list(DEBUG_SOURCES), channels=8, t_layers=1, segment=4)
    return model.to(device).eval()


def load_separator(name: str, device: str = "cpu") -> Any:
    """The Demucs model called ``name`` (``htdemucs``…) from demucs' published weights.

    Raises:
        ModelUnavailable: the weights are not cached and cannot be downloaded.
    """
    if name == DEBUG:
        return build_debug_separator(device)
    from demucs.pretrained import get_model

    try:
        model = get_model(name)
    except Exception as exc:  # demucs raises many kinds (network, unknown name, bad file)
        raise ModelUnavailable(name, f"{type(exc).__name__}: {exc}. Use `models.stems: "
                               "debug` (random weights, output is noise) offline.") from exc
    return model.to(device).eval()


@dataclass
class Separator:
    """One loaded Demucs model and what it is called; thread-confined to its lane."""

    model: Any
    """A demucs model (HTDemucs, or a BagOfModels of them): typed loosely, demucs has no
    common base class."""
    name: str
    device: str = "cpu"

    @classmethod
    def load(cls, name: str, device: str = "cpu") -> Separator:
        """Load ``name`` (see :func:`load_separator`)."""
        return cls(load_separator(name, device), name, device)

    @property
    def noise(self) -> bool:
        """True for the random-initialised model: its stems are noise."""
        return self.name == DEBUG

    @property
    def sources(self) -> list[str]:
        return list(self.model.sources)

    @property
    def sample_rate(self) -> int:
        return int(self.model.samplerate)

    @property
    def batch_key(self) -> str:
        return STEMS_BATCH_PREFIX + self.name

    def separate(
        self, audio: Audio, *, should_stop: Callable[[], bool] | None = None,
        on_progress: Callable[[float], None] | None = None,
    ) -> dict[str, Audio]:
        """Split ``audio`` into the model's sources, each as long as ``audio`` and at its rate
        and channel count.

        Raises:
            GenerationStopped: ``should_stop()`` was true between two segments.
            GenerationOutOfMemory: the accelerator ran out of memory.
        """
        mix = self._to_model(audio)
        # demucs' own CLI normalises the mix and undoes it on the stems; the models are
        # trained on unit-variance input.
        ref = mix.mean(0)
        mean, std = ref.mean(), ref.std().clamp_min(1e-8)
        segments = _segment_count(mix.shape[-1], self.model)
        done = [0]

        def between_segments(info: dict[str, Any]) -> None:
            if should_stop is not None and should_stop():
                raise GenerationStopped()
            if info.get("state") == "end":
                done[0] += 1
                if on_progress is not None:
                    on_progress(min(1.0, done[0] / segments))

        from demucs.apply import apply_model

        try:
            with torch.no_grad():
                out = apply_model(self.model, ((mix - mean) / std)[None].to(self.device),
                                  split=True, overlap=OVERLAP, progress=False,
                                  callback=between_segments)[0]
        except torch.cuda.OutOfMemoryError as exc:
            raise GenerationOutOfMemory(1) from exc
        out = out.cpu() * std + mean
        return {name: self._from_model(out[i], audio) for i, name in enumerate(self.sources)}

    def _to_model(self, audio: Audio) -> torch.Tensor:
        wav = torch.from_numpy(np.ascontiguousarray(audio.samples, dtype=np.float32))
        channels = int(self.model.audio_channels)
        if wav.shape[0] != channels:  # MusicGen is mono; htdemucs wants stereo
            wav = wav.mean(0, keepdim=True).expand(channels, -1).contiguous()
        if audio.sample_rate != self.sample_rate:
            wav = julius.resample_frac(wav, audio.sample_rate, self.sample_rate)
        return wav

    def _from_model(self, stem: torch.Tensor, like: Audio) -> Audio:
        if like.sample_rate != self.sample_rate:
            stem = julius.resample_frac(stem, self.sample_rate, like.sample_rate)
        if like.channels != stem.shape[0]:
            stem = stem.mean(0, keepdim=True).expand(like.channels, -1)
        frames = like.samples.shape[-1]
        stem = stem[..., :frames]
        if stem.shape[-1] < frames:  # resampling rounds the length; pad the last frames
            stem = torch.nn.functional.pad(stem, (0, frames - stem.shape[-1]))
        return Audio(np.ascontiguousarray(stem.numpy(), dtype=np.float32), like.sample_rate)


def _segment_count(frames: int, model: Any) -> int:
    """How many segments apply_model runs (for progress): one per stride of the segment."""
    segment = float(getattr(model, "segment", 10)) * int(model.samplerate)
    stride = max(1, int((1 - OVERLAP) * segment))
    models = len(getattr(model, "models", [model]))
    return max(1, -(-frames // stride)) * models


# --------------------------------------------------------------------------- encoding


def make_stems(
    stems: dict[str, Audio], job_id: int, fmt: str, upload_limit: int, config: Config, *,
    noise: bool = False,
) -> Track:
    """Encode each stem in ``fmt`` and zip them: ``data/tracks/<job>.stems.zip`` plus
    ``<job>.<stem>.<fmt>``.

    Each stem first gets a quarter of the upload limit, so the zip fits in one upload; when
    that is below the encoder's floor each stem gets the whole limit instead (the frontend
    then sends the files one by one).

    Raises:
        TrackTooLarge: a single stem cannot fit the upload limit.
    """
    budget = (upload_limit - ZIP_HEADROOM) // max(1, len(stems))
    try:
        encoded = {name: encode(a, fmt, budget, config.audio.bitrate_kbps)[0]
                   for name, a in stems.items()}
    except TrackTooLarge:
        encoded = {name: encode(a, fmt, upload_limit, config.audio.bitrate_kbps)[0]
                   for name, a in stems.items()}
    folder = tracks_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    for name, data in encoded.items():
        path = folder / f"{job_id}.{name}.{fmt}"
        _write_atomic(path, data)
        paths[name] = str(path)
    zipped = folder / f"{job_id}.stems.zip"
    _write_atomic(zipped, _zip(encoded, job_id, fmt))
    first = next(iter(stems.values()))
    return Track(path=str(zipped), format="zip", duration_s=round(first.duration_s, 3),
                 size_bytes=zipped.stat().st_size, sample_rate=first.sample_rate,
                 noise=noise, stems=paths)


def _zip(encoded: dict[str, bytes], job_id: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    # Stored, not deflated: the stems are already compressed audio.
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in encoded.items():
            archive.writestr(f"job{job_id}-{name}.{fmt}", data)
    return buffer.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    temp = path.with_suffix(path.suffix + ".part")
    temp.write_bytes(data)
    os.replace(temp, path)


def split_file(separator: Separator, source: str | os.PathLike[str], *,
               should_stop: Callable[[], bool] | None = None,
               on_progress: Callable[[float], None] | None = None) -> dict[str, Audio]:
    """Decode a stored track and split it (blocking; the lane runs it on its thread).

    Raises:
        GenerationError: the source file is gone or unreadable.
    """
    if not os.path.isfile(source):
        raise GenerationError("The original track is no longer stored, so it cannot be "
                              "split into stems.")
    return separator.separate(load_track(source), should_stop=should_stop,
                              on_progress=on_progress)


# --------------------------------------------------------------------------- worker lane


class StemsLane:
    """The worker's stems lane: one separation at a time on its own thread.

    It runs beside the music decode thread (never in one of its slots), so a stems job holds
    up music only for its claim transaction; on one GPU the two share the device's time.
    The model loads on the lane's thread at the first stems job (``models.stems``; start-up
    never waits for, or fails on, a Demucs download); a failed load is remembered in
    :attr:`unavailable` so the service refuses further requests before charging.
    """

    def __init__(self, config: Config, separator: Separator | None = None, *,
                 device: str = "cpu") -> None:
        self.config = config
        self.name = separator.name if separator is not None else config.models.stems
        self.device = device
        self.unavailable: str | None = None
        """Why the stems model could not be loaded (None: loaded, or not tried yet)."""
        self._separator = separator
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="demucs")

    @property
    def batch_key(self) -> str:
        return STEMS_BATCH_PREFIX + self.name

    async def render(
        self, job_id: int, source: str, fmt: str, upload_limit: int, *,
        should_stop: Callable[[], bool], on_progress: Callable[[float], None],
    ) -> Track:
        """Split ``source`` and store the stems of job ``job_id``.

        Raises GenerationStopped, GenerationOutOfMemory, ModelUnavailable, GenerationError
        or TrackTooLarge.
        """
        loop = asyncio.get_running_loop()
        separator = await loop.run_in_executor(self._executor, self._loaded)
        stems = await loop.run_in_executor(self._executor, lambda: split_file(
            separator, source, should_stop=should_stop, on_progress=on_progress))
        return await asyncio.to_thread(make_stems, stems, job_id, fmt, upload_limit,
                                       self.config, noise=separator.noise)

    def _loaded(self) -> Separator:
        if self._separator is None:
            try:
                self._separator = Separator.load(self.name, self.device)
            except ModelUnavailable as exc:
                self.unavailable = exc.user_message
                raise
            log.info("stems model %s ready on %s%s", self.name, self.device,
                     " — random weights: stems are noise" if self._separator.noise else "")
        return self._separator

    def close(self) -> None:
        """Wait for the separation in progress (it stops at its next segment on shutdown)."""
        self._executor.shutdown(wait=True)
