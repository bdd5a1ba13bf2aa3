"""Honest loudness: BS.1770 integrated loudness (pyloudnorm), normalisation to the target,
the -1 dBFS sample-peak ceiling, and the fallback for audio shorter than one 400 ms block."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest

from bot.config import Config
from generation.analysis import integrated_loudness
from generation.audio import Audio, make_track, normalize, rms_db

SR = 48000
CEILING = 10 ** (-1 / 20)


def sine(seconds: float, amplitude: float, channels: int = 2, hz: float = 1000.0) -> Audio:
    t = np.arange(int(seconds * SR)) / SR
    wave = (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return Audio(np.tile(wave, (channels, 1)), SR)


def test_the_ebu_reference_sine_reads_minus_23_lufs() -> None:
    # EBU Tech 3341 case 1: 1 kHz stereo sine at -23 dBFS in each channel = -23.0 LUFS
    reference = sine(20.0, 10 ** (-23 / 20))
    measured = integrated_loudness(reference.samples, SR)
    assert measured == pytest.approx(-23.0, abs=0.1)
    assert measured == pytest.approx(pyloudnorm.Meter(SR).integrated_loudness(
        reference.samples.T.astype(np.float64)), abs=1e-9)


@pytest.mark.parametrize("target", [-23.0, -14.0])
def test_normalisation_hits_the_target(target: float) -> None:
    rng = np.random.default_rng(3)
    noise = Audio((0.01 * rng.standard_normal((2, SR * 5))).astype(np.float32), SR)
    for start in (sine(5.0, 0.003), noise):
        levelled = normalize(start, target)
        assert integrated_loudness(levelled.samples, SR) == pytest.approx(target, abs=0.1)
        assert np.max(np.abs(levelled.samples)) <= CEILING + 1e-6


def test_the_peak_ceiling_wins_over_a_loud_target() -> None:
    # 0 LUFS needs a stereo sine peaking at full scale: the gain stops at -1 dBFS sample peak
    levelled = normalize(sine(3.0, 0.1), 0.0)
    assert np.max(np.abs(levelled.samples)) == pytest.approx(CEILING, rel=1e-4)
    assert integrated_loudness(levelled.samples, SR) == pytest.approx(-1.0, abs=0.1)


def test_audio_shorter_than_one_block_is_levelled_by_rms_instead() -> None:
    short = sine(0.3, 0.01, channels=1)
    assert integrated_loudness(short.samples, SR) is None  # BS.1770 needs 400 ms
    assert rms_db(normalize(short, -14.0).samples) == pytest.approx(-14.0, abs=0.1)
    silent = Audio(np.zeros((2, SR), dtype=np.float32), SR)
    assert integrated_loudness(silent.samples, SR) is None
    assert not np.any(normalize(silent, -14.0).samples)


def test_a_stored_track_carries_its_measured_loudness(config: Config) -> None:
    track = make_track(sine(6.0, 0.01), 5, "wav", 50 * 1024 * 1024, config)
    assert track.loudness_lufs == pytest.approx(config.audio.target_lufs, abs=1.0)  # fade-out
    assert track.tempo_bpm is None or track.tempo_bpm > 0
    tiny = make_track(sine(0.3, 0.01), 6, "wav", 50 * 1024 * 1024, config)
    assert tiny.loudness_lufs is None
