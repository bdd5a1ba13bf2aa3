"""What a finished track sounds like, measured: tempo, key and BS.1770 loudness.

Runs in the worker's encoding thread (:func:`generation.audio.make_track`), on float samples
``[channels, frames]``. Every estimate is best effort: a measurement that cannot be made
(silence, a clip too short) is ``None`` and never fails the job. With the ``debug`` model the
audio is noise, and the numbers are whatever the estimators say about noise — the texts
label tempo and key as *estimated* for that reason.

- **Tempo**: librosa 0.11 ``beat.beat_track`` on a mono mix at 22.05 kHz.
- **Key**: mean chroma (``feature.chroma_stft``) correlated with the 24 rotated
  Krumhansl–Kessler major/minor profiles; the best correlation wins.
- **Loudness**: pyloudnorm's ITU-R BS.1770-4 integrated loudness (K-weighting, 400 ms
  blocks, absolute and relative gates). It needs at least one 400 ms block: shorter audio
  has no defined integrated loudness, so :func:`integrated_loudness` returns None.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

ANALYSIS_RATE = 22050
"""librosa's default rate: tempo and chroma are computed on a resampled mono mix."""
MIN_LOUDNESS_S = 0.4
"""BS.1770 gating blocks are 400 ms; below that pyloudnorm cannot measure."""
NOTES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29,
                          2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34,
                          3.17])
"""Krumhansl & Kessler (1982) probe-tone profiles, tonic first."""


@dataclass(frozen=True)
class Analysis:
    """Estimates for one track; None where nothing could be measured."""

    tempo_bpm: float | None
    key: str | None


def mono(samples: np.ndarray) -> np.ndarray:
    """``[channels, frames]`` (or ``[frames]``) → float32 mono ``[frames]``."""
    data = np.asarray(samples, dtype=np.float32)
    return data if data.ndim == 1 else data.mean(axis=0)


def _resampled(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    import librosa  # heavy import (numba): only in the worker's encoding thread

    signal = mono(samples)
    if sample_rate != ANALYSIS_RATE:
        signal = librosa.resample(signal, orig_sr=sample_rate, target_sr=ANALYSIS_RATE)
    return np.ascontiguousarray(signal, dtype=np.float32)


def estimate_tempo(samples: np.ndarray, sample_rate: int) -> float | None:
    """Beats per minute from librosa's beat tracker; None for silence or < 1 s of audio."""
    import librosa

    signal = _resampled(samples, sample_rate)
    if signal.size < ANALYSIS_RATE or not np.any(signal):
        return None
    tempo, _ = librosa.beat.beat_track(y=signal, sr=ANALYSIS_RATE)
    value = float(np.atleast_1d(tempo)[0])
    return round(value, 1) if math.isfinite(value) and value > 0 else None


def estimate_key(samples: np.ndarray, sample_rate: int) -> str | None:
    """``A minor``: the Krumhansl profile best correlated with the mean chroma; None for
    silence, less than 0.5 s, or chroma with no variation (nothing to correlate)."""
    import librosa

    signal = _resampled(samples, sample_rate)
    if signal.size < ANALYSIS_RATE // 2 or not np.any(signal):
        return None
    # tuning=0: no pitch-tuning estimate (slow, and it warns on noise); A440 is assumed
    chroma = librosa.feature.chroma_stft(y=signal, sr=ANALYSIS_RATE, tuning=0.0).mean(axis=1)
    if not np.all(np.isfinite(chroma)) or float(np.std(chroma)) == 0.0:
        return None
    best, name = -math.inf, None
    for tonic in range(12):
        for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)):
            score = float(np.corrcoef(chroma, np.roll(profile, tonic))[0, 1])
            if score > best:
                best, name = score, f"{NOTES[tonic]} {mode}"
    return name


def analyse(samples: np.ndarray, sample_rate: int) -> Analysis:
    """Tempo and key of a track; an estimator that fails is logged and left None."""
    tempo = key = None
    try:
        tempo = estimate_tempo(samples, sample_rate)
        key = estimate_key(samples, sample_rate)
    except Exception:  # an estimate is a nicety: it must never fail a paid track
        log.warning("tempo/key analysis failed", exc_info=True)
    return Analysis(tempo, key)


def integrated_loudness(samples: np.ndarray, sample_rate: int) -> float | None:
    """BS.1770 integrated loudness in LUFS; None below 0.4 s or for (gated) silence."""
    import pyloudnorm  # type: ignore[import-untyped]

    data = np.asarray(samples, dtype=np.float64)
    frames = data.shape[-1]
    if frames < MIN_LOUDNESS_S * sample_rate or not np.any(data):
        return None
    # pyloudnorm wants [frames, channels]; more than 5 channels has no BS.1770 weighting
    loudness = pyloudnorm.Meter(sample_rate).integrated_loudness(data.T if data.ndim > 1
                                                                 else data)
    return float(loudness) if math.isfinite(loudness) else None
