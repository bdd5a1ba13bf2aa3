"""``musicbot generate --stems`` and ``musicbot console -c '/stems N'`` as an operator runs them.

The Demucs model is ``debug`` (random weights, no download): the stems are noise and the
command says so; the tests check the files an operator gets.
"""

from __future__ import annotations

from pathlib import Path

from pydub import AudioSegment

from tests.app.test_cli import musicbot

STEMS = ("drums", "bass", "other", "vocals")


def test_generate_with_stems_writes_four_files_beside_the_output(tmp_path: Path) -> None:
    done = musicbot("generate", "ambient drone", "--duration", "2", "--model", "debug",
                    "--stems", "--stems-model", "debug", "-o", "out/drone.mp3", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    track = AudioSegment.from_file(tmp_path / "out" / "drone.mp3", format="mp3")
    for stem in STEMS:
        audio = AudioSegment.from_file(tmp_path / "out" / f"drone.{stem}.mp3", format="mp3")
        assert abs(audio.duration_seconds - track.duration_seconds) < 0.06
    assert "stems are NOISE" in done.stderr


def test_console_stems_command_prints_the_zip_and_each_stem(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "models:\n  default: debug\n  stems: debug\n"
        "generation:\n  device: cpu\n")
    done = musicbot("console", "-c", "/music drone duration:2", "-c", "/stems 1",
                    "-c", "/balance", cwd=tmp_path)

    assert done.returncode == 0, done.stderr + done.stdout
    assert "ZIP written:" in done.stdout
    for stem in STEMS:
        assert f"  {stem}: " in done.stdout
    assert "Your balance: 185 tokens." in done.stdout  # 200 - 10 (track) - 5 (stems)
