"""A stored track in another format, converted on demand and cached beside the track.

The worker stores each track in one format (the member's choice). A page visitor may want
another: the first request converts with ffmpeg (through pydub) in a thread, writes
``<job id>.download.<fmt>`` atomically next to the track, and later requests serve that file.
The retention sweep deletes the copies with the track (it sweeps the whole folder by age).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pydub import AudioSegment

from bot.config import FORMATS
from bot.core.models import Track

MEDIA_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg"}
"""What browsers expect in ``Content-Type`` for each of :data:`bot.config.FORMATS`."""

_EXPORT: dict[str, dict[str, str]] = {
    "mp3": {"format": "mp3", "codec": "libmp3lame", "bitrate": "192k"},
    "ogg": {"format": "ogg", "codec": "libvorbis", "bitrate": "160k"},
    "flac": {"format": "flac"},
    "wav": {"format": "wav"},
}
# One conversion per target file at a time: a second visitor waits for the first's file.
_locks: dict[Path, asyncio.Lock] = {}


def converted_path(track: Track, fmt: str) -> Path:
    """Where the ``fmt`` copy of ``track`` lives: the track itself when it is that format."""
    source = Path(track.path)
    if fmt == track.format:
        return source
    return source.with_name(f"{source.stem}.download.{fmt}")


async def download_file(track: Track, fmt: str) -> Path:
    """The track as a ``fmt`` file, converting (once) when it is stored in another format.

    Raises ValueError for a format we do not offer, OSError when the track is gone.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    target = converted_path(track, fmt)
    if target.is_file():
        return target
    lock = _locks.setdefault(target, asyncio.Lock())
    async with lock:
        if not target.is_file():  # converted while we waited
            await asyncio.to_thread(_convert, Path(track.path), target, fmt)
    _locks.pop(target, None)
    return target


def _convert(source: Path, target: Path, fmt: str) -> None:
    if not source.is_file():
        raise FileNotFoundError(source)
    temp = target.with_name(target.name + ".part")
    try:
        AudioSegment.from_file(os.fspath(source)).export(os.fspath(temp), **_EXPORT[fmt])
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
