"""Finishing tracks: loudness, fade, real ffmpeg encodes sized to upload limits, storage."""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np
import pytest
from PIL import Image
from pydub import AudioSegment

from bot.config import Config
from generation.analysis import integrated_loudness
from generation.audio import (
    Audio,
    encode,
    fade_out,
    load_track,
    make_track,
    normalize,
    sweep_tracks,
    warm_up_finishing,
)
from generation.errors import TrackTooLarge

SR = 32000


def tone(seconds: float, level: float = 0.05, channels: int = 1) -> Audio:
    t = np.arange(int(seconds * SR)) / SR
    wave = (level * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return Audio(np.tile(wave, (channels, 1)), SR)


def decode(data: bytes, fmt: str) -> AudioSegment:
    import io

    return AudioSegment.from_file(io.BytesIO(data), format=fmt)


def test_mp3_is_valid_and_lasts_as_long_as_the_track() -> None:
    data, kbps = encode(tone(3.0), "mp3", 10 * 1024 * 1024, 192)
    segment = decode(data, "mp3")
    assert kbps == 192
    assert segment.duration_seconds == pytest.approx(3.0, abs=0.08)


def test_bitrate_drops_until_the_file_fits_the_upload_limit() -> None:
    limit = 200_000  # 20 s at 192 kbps would be ~480 kB
    data, kbps = encode(tone(20.0), "mp3", limit, 192)
    assert len(data) <= limit and kbps < 192
    assert decode(data, "mp3").duration_seconds == pytest.approx(20.0, abs=0.08)


def test_track_that_cannot_fit_even_at_32_kbps_is_refused_clearly() -> None:
    with pytest.raises(TrackTooLarge) as err:
        encode(tone(30.0), "mp3", 20_000, 192)
    assert "32 kbps" in err.value.user_message and "shorter" in err.value.user_message


def test_wav_over_the_limit_suggests_mp3() -> None:
    with pytest.raises(TrackTooLarge) as err:
        encode(tone(10.0), "wav", 100_000)
    assert "mp3" in err.value.user_message


@pytest.mark.parametrize("fmt", ["mp3", "wav", "flac", "ogg"])
def test_stereo_tracks_decode_back_in_every_format(fmt: str) -> None:
    data, _ = encode(tone(2.0, channels=2), fmt, 10 * 1024 * 1024, 128)
    segment = decode(data, fmt)
    assert segment.channels == 2
    assert segment.duration_seconds == pytest.approx(2.0, abs=0.08)


def test_normalize_reaches_the_target_without_clipping() -> None:
    quiet = normalize(tone(2.0, level=0.01), -14.0)
    # BS.1770 integrated loudness now (was RMS dBFS): see tests/generation/test_loudness.py
    assert integrated_loudness(quiet.samples, SR) == pytest.approx(-14.0, abs=0.1)
    loud = normalize(tone(2.0, level=0.9), -3.0)  # target would push the peak past -1 dBFS
    assert np.max(np.abs(loud.samples)) <= 10 ** (-1 / 20) + 1e-6


def test_fade_out_ends_in_silence() -> None:
    faded = fade_out(tone(2.0, level=0.5), 0.5)
    assert abs(faded.samples[0, -1]) < 1e-6
    assert np.max(np.abs(faded.samples[0, : SR])) == pytest.approx(0.5, abs=1e-3)


def test_track_is_stored_with_a_waveform_and_decodes_back(config: Config) -> None:
    track = make_track(tone(2.0), 17, "mp3", 10 * 1024 * 1024, config, noise=True)
    assert track.path.endswith("tracks/17.mp3") and os.path.getsize(track.path) == track.size_bytes
    assert track.noise and track.duration_s == pytest.approx(2.0)
    assert Image.open(track.waveform_path).size == (800, 160)
    back = load_track(track.path)
    assert back.sample_rate == SR and back.duration_s == pytest.approx(2.0, abs=0.08)


def test_warm_up_loads_the_analysis_and_stores_nothing(config: Config) -> None:
    """The worker's warm-up pays librosa's import (numba compiles ~2 s while holding the
    GIL) at start, not while the first member's track is finished beside live requests."""
    warm_up_finishing(config)
    assert "librosa.beat" in sys.modules and "pyloudnorm" in sys.modules
    assert not config.tracks_path.exists() or not any(config.tracks_path.iterdir())


def test_retention_sweep_deletes_only_old_tracks(config: Config) -> None:
    old = make_track(tone(1.0), 1, "mp3", 10**7, config)
    new = make_track(tone(1.0), 2, "mp3", 10**7, config)
    month_ago = time.time() - 31 * 86400
    for path in (old.path, old.waveform_path):
        os.utime(path, (month_ago, month_ago))
    keep_all = dataclasses.replace(config, audio=dataclasses.replace(config.audio,
                                                                     retention_days=0))
    assert sweep_tracks(keep_all) == 0
    assert sweep_tracks(config) == 2
    assert not os.path.exists(old.path) and os.path.exists(new.path)


@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
@pytest.mark.parametrize("fmt", ["mp3", "ogg", "wav", "flac"])
def test_every_format_encodes_mono_and_stereo_at_the_default_bitrate(fmt: str,
                                                                     channels: int) -> None:
    # MusicGen models give mono (or stereo) 32 kHz; libvorbis refuses 192 kbps for mono
    data, kbps = encode(tone(2.0, channels=channels), fmt, 10 * 1024 * 1024, 192)
    segment = decode(data, fmt)
    assert segment.channels == channels and segment.frame_rate == SR
    assert segment.duration_seconds == pytest.approx(2.0, abs=0.08)
    assert (kbps == 0) == (fmt in ("wav", "flac"))


@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
@pytest.mark.parametrize("fmt", ["mp3", "ogg"])
def test_lossy_formats_shrink_to_the_upload_limit(fmt: str, channels: int) -> None:
    limit = 150_000  # 20 s at 192 kbps would be ~480 kB
    data, kbps = encode(tone(20.0, channels=channels), fmt, limit, 192)
    assert len(data) <= limit and kbps < 192
    assert decode(data, fmt).duration_seconds == pytest.approx(20.0, abs=0.1)


@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
def test_ogg_that_cannot_fit_is_refused_as_too_large(channels: int) -> None:
    with pytest.raises(TrackTooLarge) as err:
        encode(tone(30.0, channels=channels), "ogg", 5_000, 192)
    assert "kbps" in err.value.user_message and "shorter" in err.value.user_message
