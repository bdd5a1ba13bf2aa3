"""Test files for audio prompts, made with the real ffmpeg: good clips and each bad kind."""

from __future__ import annotations

import subprocess
from pathlib import Path


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def sine(path: Path, seconds: float, rate: int = 44100, channels: int = 2,
         freq: float = 440.0) -> Path:
    """A sine tone (MP3/WAV/OGG by the suffix) at ``rate`` with ``channels``."""
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency={freq}:duration={seconds}:sample_rate={rate}",
           "-ac", str(channels), str(path))
    return path


def picture(path: Path) -> Path:
    """A PNG image: a real file, not audio."""
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=16x16", "-frames:v", "1", str(path))
    return path


def text(path: Path) -> Path:
    path.write_text("these are not the droids you are looking for\n" * 20)
    return path


def corrupt(path: Path, source: Path) -> Path:
    """An MP3 header followed by garbage: ffprobe sees audio, decoding fails."""
    data = source.read_bytes()
    keep = len(data) // 3
    path.write_bytes(data[:keep] + bytes((i * 37 + 11) % 256 for i in range(len(data) - keep)))
    return path


def truncated_wav(path: Path, source: Path) -> Path:
    """A WAV cut after its header: a header promising audio and no samples."""
    path.write_bytes(source.read_bytes()[:44])
    return path
