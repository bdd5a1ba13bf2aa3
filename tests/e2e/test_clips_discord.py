"""End-to-end audio prompts on Discord: ``/music audio:`` and ``melody:`` attachments.

The real discord.py client resolves the attachment options; the fake Discord serves the
files on 127.0.0.1 (its CDN) and counts downloads; ffmpeg checks them before any charge.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydub import AudioSegment

from tests.core import clip_files
from tests.e2e.discord_fixtures import STARTING_BALANCE, DiscordWorld, open_world
from tests.e2e.test_discord import PRICE_2S, job_id_of
from tests.fakes.discord_fake import FakeFile


@pytest.fixture
async def world(tmp_path, monkeypatch) -> AsyncIterator[DiscordWorld]:
    async with open_world(tmp_path, monkeypatch) as w:
        yield w


def fake_file(path: Path, content_type: str = "audio/mpeg", **extra: int) -> FakeFile:
    return FakeFile(path.name, path.read_bytes(), content_type, **extra)


async def test_audio_attachment_is_continued_and_charged_for_the_new_seconds(
    world: DiscordWorld, tmp_path: Path,
) -> None:
    riff = fake_file(clip_files.sine(tmp_path / "riff.mp3", 1.0))
    it = await world.music("keep going", 2.0, audio=riff)
    status = await it.wait_message(lambda m: "queued" in m.content)
    assert "Continues your clip" in status.content
    assert f"Charged **{PRICE_2S}** tokens" in status.content
    result = await world.result(job_id_of(status))
    seconds = AudioSegment.from_file(io.BytesIO(result.upload(".mp3").data)).duration_seconds
    assert seconds == pytest.approx(3.0, abs=0.3)  # the 1 s clip, then 2 s of new music
    assert riff.downloads == 1
    expected = f"Your balance: **{STARTING_BALANCE - PRICE_2S}** tokens."
    assert await world.say("balance") == expected


@pytest.mark.parametrize("kind, words", [
    ("not audio", "not an audio file"),
    ("too long", "clips can be at most 30 s"),
    ("too big", "clips can be at most 10.0 MiB"),
    ("corrupt", "damaged"),
])
async def test_bad_attachments_are_refused_privately_and_charge_nothing(
    world: DiscordWorld, tmp_path: Path, kind: str, words: str,
) -> None:
    good = clip_files.sine(tmp_path / "good.mp3", 2.0)
    files = {
        "not audio": lambda: fake_file(clip_files.text(tmp_path / "lyrics.txt"), "text/plain"),
        "too long": lambda: fake_file(clip_files.sine(tmp_path / "long.ogg", 31.0, rate=8000)),
        "too big": lambda: fake_file(good, declared_size=50 * 1024 * 1024),
        "corrupt": lambda: fake_file(clip_files.corrupt(tmp_path / "broken.mp3", good)),
    }
    attachment = files[kind]()
    it = await world.music("keep going", 2.0, audio=attachment)
    answer = await it.wait_message()
    assert answer.ephemeral and words in answer.content
    assert attachment.downloads == (0 if kind == "too big" else 1)  # big: never fetched
    assert await world.say("balance") == f"Your balance: **{STARTING_BALANCE}** tokens."


async def test_a_melody_for_a_model_without_chroma_is_refused_before_charging(
    world: DiscordWorld, tmp_path: Path,
) -> None:
    hum = fake_file(clip_files.sine(tmp_path / "hum.mp3", 2.0))
    it = await world.music("follow this", 2.0, melody=hum)
    answer = await it.wait_message()
    assert answer.ephemeral and "cannot follow a melody" in answer.content
    assert await world.say("balance") == f"Your balance: **{STARTING_BALANCE}** tokens."
