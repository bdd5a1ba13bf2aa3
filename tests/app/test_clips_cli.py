"""Audio prompts from the operator's shell: ``/music audio:FILE`` in the console and
``musicbot generate --audio FILE`` / ``--melody FILE`` (real subprocesses, real ffmpeg)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydub import AudioSegment

from tests.app.test_cli import mp3_path, musicbot
from tests.core import clip_files

pytestmark = pytest.mark.slow


def test_console_continues_a_local_clip_and_charges_the_new_seconds(tmp_path: Path) -> None:
    riff = clip_files.sine(tmp_path / "riff.mp3", 1.0)
    done = musicbot("console", "--model", "debug", "-c",
                    f"/music prompt:more duration:2 audio:{riff}", "-c", "/balance",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Continues your clip" in done.stdout
    assert "Charged 10 tokens" in done.stdout  # 2 new seconds, the minimum price
    seconds = AudioSegment.from_file(mp3_path(done.stdout)).duration_seconds
    assert seconds == pytest.approx(3.0, abs=0.3)


def test_console_refuses_a_file_that_is_not_audio_and_charges_nothing(tmp_path: Path) -> None:
    notes = clip_files.text(tmp_path / "notes.mp3")
    done = musicbot("console", "--model", "debug", "-c",
                    f"/music prompt:more duration:2 audio:{notes}", "-c", "/balance",
                    cwd=tmp_path)
    assert done.returncode == 1
    assert "Invalid audio: this is not an audio file" in done.stdout
    assert "Your balance: 200 tokens." in done.stdout


def test_generate_audio_and_melody(tmp_path: Path) -> None:
    clip = clip_files.sine(tmp_path / "clip.wav", 1.0)
    done = musicbot("generate", "more", "--duration", "2", "--model", "debug", "--audio",
                    str(clip), "-o", "cont.mp3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert AudioSegment.from_file(tmp_path / "cont.mp3").duration_seconds == pytest.approx(
        3.0, abs=0.3)
    done = musicbot("generate", "hum", "--duration", "2", "--model", "debug-melody",
                    "--melody", str(clip), "-o", "mel.mp3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert AudioSegment.from_file(tmp_path / "mel.mp3").duration_seconds == pytest.approx(
        2.0, abs=0.3)
    refused = musicbot("generate", "hum", "--duration", "2", "--model", "debug",
                       "--melody", str(clip), cwd=tmp_path)
    assert refused.returncode != 0 and "cannot follow a melody" in refused.stderr
