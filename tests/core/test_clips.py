"""Audio prompts at the core's edge: a clip is checked and stored before anything is charged.

Real ffprobe/ffmpeg on real files made by the test; the ledger is read from the SQLite file.
"""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from bot.config import Config
from bot.core.errors import InvalidRequest
from bot.core.service import MusicService
from bot.media.clips import check_size, intake
from tests.core import clip_files
from tests.core.conftest import make_config, member, music, order, snapshot


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path, limits={"max_clip_s": 8.0, "max_clip_bytes": 400_000})


async def test_a_clip_is_stored_as_32k_wav_named_by_its_hash(config: Config,
                                                             tmp_path: Path) -> None:
    source = clip_files.sine(tmp_path / "tune.mp3", 3.0, rate=44100, channels=2)
    clip = await intake(config, "audio", source, "small")
    assert clip.path.parent == config.data_path / "prompts"
    assert clip.path.name == f"{clip.sha256}.wav"
    with wave.open(str(clip.path)) as wav:
        assert (wav.getframerate(), wav.getnchannels()) == (32000, 1)  # small is mono
    assert clip.duration_s == pytest.approx(3.0, abs=0.1)
    again = await intake(config, "audio", source, "small")
    assert again.path == clip.path  # the same upload is stored once


async def test_a_stereo_model_gets_a_stereo_clip(config: Config, tmp_path: Path) -> None:
    source = clip_files.sine(tmp_path / "tune.wav", 1.0, channels=1)
    clip = await intake(config, "audio", source, "stereo-small")
    with wave.open(str(clip.path)) as wav:
        assert wav.getnchannels() == 2


@pytest.mark.parametrize("kind, words", [
    ("text", "not an audio file"),
    ("picture", "no audio"),
    ("long", "at most 8 s"),
    ("corrupt", "damaged"),
    ("empty_wav", "damaged"),
])
async def test_bad_clips_are_refused_with_a_reason_and_no_charge(
    config: Config, tmp_path: Path, open_service, kind: str, words: str,
) -> None:
    service: MusicService = await open_service(config)
    await service.balance(member())  # the account exists before, so "unchanged" means it
    before = snapshot(config.database_path)
    good = clip_files.sine(tmp_path / "good.mp3", 3.0)
    files = {
        "text": lambda: clip_files.text(tmp_path / "notes.mp3"),
        "picture": lambda: clip_files.picture(tmp_path / "cover.png"),
        "long": lambda: clip_files.sine(tmp_path / "long.ogg", 9.0),
        "corrupt": lambda: clip_files.corrupt(tmp_path / "broken.mp3", good),
        "empty_wav": lambda: clip_files.truncated_wav(
            tmp_path / "cut.wav", clip_files.sine(tmp_path / "w.wav", 1.0)),
    }
    with pytest.raises(InvalidRequest) as caught:
        clip = await intake(config, "audio", files[kind](), "small")
        await order(service, member(), music(audio=str(clip.path)))
    assert caught.value.field == "audio"
    assert words in caught.value.user_message
    assert snapshot(config.database_path) == before
    assert not list((config.data_path / "prompts").glob("*.wav"))


def test_a_too_big_file_is_refused_before_download(config: Config) -> None:
    with pytest.raises(InvalidRequest, match=r"at most 0\.4 MiB"):
        check_size(config, "melody", 2_000_000)
    check_size(config, "melody", None)  # unknown size: the downloader counts instead


async def test_a_too_big_file_on_disk_is_refused(config: Config, tmp_path: Path) -> None:
    source = clip_files.sine(tmp_path / "big.wav", 6.0, rate=48000)  # ~2.3 MB
    with pytest.raises(InvalidRequest, match="clips can be at most"):
        await intake(config, "audio", source, "small")


async def test_continuation_is_charged_for_the_new_seconds_only(
    config: Config, tmp_path: Path, service: MusicService,
) -> None:
    clip = await intake(config, "audio", clip_files.sine(tmp_path / "t.mp3", 5.0), "small")
    receipt = await order(service, member(), music(duration=5, audio=str(clip.path)))
    plain = await order(service, member(), music(duration=5))
    assert receipt.price == plain.price
    assert receipt.job.params.audio_prompt == str(clip.path)


async def test_only_stored_clips_are_accepted(config: Config, service: MusicService,
                                              tmp_path: Path) -> None:
    before = snapshot(config.database_path)
    for value in ("/etc/passwd", str(tmp_path / "x.wav"), "https://example.com/a.mp3"):
        with pytest.raises(InvalidRequest, match="attach an audio file"):
            await order(service, member(), music(audio=value))
    assert snapshot(config.database_path) == before


async def test_melody_on_a_model_without_chroma_is_refused_before_charging(
    config: Config, tmp_path: Path, service: MusicService,
) -> None:
    clip = await intake(config, "melody", clip_files.sine(tmp_path / "m.mp3", 2.0), "small")
    await service.balance(member())
    before = snapshot(config.database_path)
    with pytest.raises(InvalidRequest, match="cannot follow a melody; use debug-melody or "
                       "melody"):
        await order(service, member(), music(melody=str(clip.path), model="small"))
    assert snapshot(config.database_path) == before
    receipt = await order(service, member(), music(melody=str(clip.path), model="melody"))
    assert receipt.job.params.melody_prompt == str(clip.path)


async def test_audio_and_melody_together_are_refused(config: Config, tmp_path: Path,
                                                     service: MusicService) -> None:
    clip = await intake(config, "audio", clip_files.sine(tmp_path / "m.mp3", 2.0), "melody")
    with pytest.raises(InvalidRequest, match="not both"):
        await order(service, member(), music(audio=str(clip.path), melody=str(clip.path),
                                             model="melody"))


async def test_old_clips_are_swept_with_the_track_retention(config: Config,
                                                             tmp_path: Path) -> None:
    import os

    from bot.media.clips import sweep_clips

    old = await intake(config, "audio", clip_files.sine(tmp_path / "a.mp3", 1.0), "small")
    new = await intake(config, "audio", clip_files.sine(tmp_path / "b.mp3", 1.0, freq=220),
                       "small")
    now = old.path.stat().st_mtime + 1
    days = config.audio.retention_days
    os.utime(old.path, (now - days * 86400 - 10, now - days * 86400 - 10))
    assert sweep_clips(config, now) == 1
    assert not old.path.exists() and new.path.exists()
