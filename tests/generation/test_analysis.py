"""Tempo and key estimates on synthetic signals whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from generation.analysis import analyse, estimate_key, estimate_tempo

SR = 32000


def click_track(bpm: float, seconds: float = 12.0) -> np.ndarray:
    """Short 1 kHz blips, one per beat: a metronome at ``bpm``."""
    out = np.zeros(int(seconds * SR), dtype=np.float32)
    blip = int(0.02 * SR)
    shape = np.sin(2 * np.pi * 1000 * np.arange(blip) / SR) * np.exp(-np.arange(blip) / 200)
    for beat in np.arange(0, seconds, 60.0 / bpm):
        start = int(beat * SR)
        out[start:start + blip] += shape[: len(out) - start].astype(np.float32)
    return out[None, :]


def chord(notes_hz: list[float], seconds: float = 4.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    wave = sum(np.sin(2 * np.pi * f * t) for f in notes_hz) / len(notes_hz)
    return (0.3 * wave).astype(np.float32)[None, :]


def test_tempo_of_a_120_bpm_click_track_is_found_within_a_few_bpm() -> None:
    # librosa's tempo grid near 120 BPM is ~117.5 / 123.0 (hop 512 at 22.05 kHz)
    assert estimate_tempo(click_track(120), SR) == pytest.approx(120, abs=4)


def test_tempo_follows_a_faster_click_track() -> None:
    assert estimate_tempo(click_track(150), SR) == pytest.approx(150, abs=6)


def test_an_a_minor_chord_is_called_a_minor() -> None:
    a_minor = chord([220.0, 261.63, 329.63, 440.0])  # A3 C4 E4 A4
    assert estimate_key(a_minor, SR) == "A minor"


def test_a_c_major_chord_is_called_c_major() -> None:
    c_major = chord([261.63, 329.63, 392.0, 523.25])  # C4 E4 G4 C5
    assert estimate_key(c_major, SR) == "C major"


def test_silence_and_tiny_clips_have_no_estimate() -> None:
    silent = np.zeros((2, SR * 3), dtype=np.float32)
    assert analyse(silent, SR).tempo_bpm is None and analyse(silent, SR).key is None
    assert estimate_tempo(click_track(120, seconds=0.5), SR) is None
