"""Audio prompts: check an uploaded clip and store it as a normalised WAV, before charging.

Torch-free on purpose (the core and the frontends import it): ffprobe says whether a file is
audio and how long it is, ffmpeg decodes it fully (a truncated or corrupt file fails here, not
on the GPU) and writes 32 kHz 16-bit WAV (every MusicGen model runs at 32 kHz), mono or
stereo as the model needs, to ``<data_dir>/prompts/<sha256>.wav``. The name is the hash of
the WAV itself, so the same clip uploaded twice is stored once.

Every refusal is an :class:`~bot.core.errors.InvalidRequest` naming the option (``audio`` or
``melody``) with a message a member can act on; nothing is charged before a clip is stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.config import Config
from bot.core.errors import InvalidRequest
from bot.core.requests import prompts_dir

MODEL_SAMPLE_RATE = 32000
"""Sample rate of every MusicGen model (EnCodec 32 kHz)."""
PROBE_TIMEOUT_S = 20.0
CONVERT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Clip:
    """A checked clip stored as WAV: what a job's ``audio``/``melody`` field names."""

    path: Path
    sha256: str
    duration_s: float
    channels: int
    sample_rate: int = MODEL_SAMPLE_RATE


def model_channels(config: Config, model: str | None) -> int:
    """2 for stereo models (``facebook/musicgen-stereo-*``), else 1."""
    source = config.model_source(model or config.models.default)
    return 2 if "stereo" in source else 1


def check_size(config: Config, field: str, size: int | None) -> None:
    """Refuse a file whose size (from the platform's metadata) is over ``limits.max_clip_bytes``.

    Called before downloading, and again by the downloader as bytes arrive (a platform's
    figure may be missing or wrong).
    """
    limit = config.limits.max_clip_bytes
    if size is not None and size > limit:
        raise InvalidRequest(field, f"the file is {_mib(size)}; clips can be at most "
                             f"{_mib(limit)}")


async def intake(config: Config, field: str, source: Path, model: str | None = None) -> Clip:
    """Probe ``source``, refuse what is not a usable clip, store it normalised; return it.

    Raises:
        InvalidRequest: not a file, too big, not audio, too long, too short, or undecodable.
    """
    try:
        size = source.stat().st_size
    except OSError:
        raise InvalidRequest(field, "the file could not be read") from None
    check_size(config, field, size)
    duration = await _probe_duration(field, source)
    limit = config.limits.max_clip_s
    if duration > limit:
        raise InvalidRequest(field, f"the clip is {duration:.1f} s long; clips can be at most "
                             f"{limit:g} s")
    channels = model_channels(config, model)
    return await _convert(config, field, source, channels)


async def local_clips(config: Config, values: dict[str, Any]) -> dict[str, str]:
    """Stored clip paths for ``audio``/``melody`` values that name local files.

    For the console and ``musicbot generate``, whose user is the operator of this machine
    (chat members never name host files: their clips come as platform attachments).
    """
    found = {}
    for field in ("audio", "melody"):
        value = values.get(field)
        if value:
            clip = await intake(config, field, Path(str(value)).expanduser(), values.get("model"))
            found[field] = str(clip.path)
    return found


def sweep_clips(config: Config, now: float | None = None) -> int:
    """Delete stored clips older than ``audio.retention_days`` (0 keeps all); returns how many.

    The same retention as tracks: a re-roll of an older clip job then fails, refunded, with
    "attach it again". A clip uploaded again is written again, which renews its age.
    """
    days = config.audio.retention_days
    folder = prompts_dir(config)
    if days <= 0 or not folder.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - days * 86400
    deleted = 0
    for path in folder.glob("*.wav"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                deleted += 1
        except FileNotFoundError:
            continue  # removed concurrently
    return deleted


async def _probe_duration(field: str, source: Path) -> float:
    """Seconds of the first audio stream, or InvalidRequest when there is none."""
    out = await _run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                      "stream=codec_type,duration:format=duration,format_name", "-of", "json",
                      os.fspath(source)], PROBE_TIMEOUT_S)
    if out is None:
        raise InvalidRequest(field, "this is not an audio file, or it is damaged (send MP3, "
                             "WAV, OGG, FLAC or M4A)")
    info = json.loads(out or b"{}")
    streams = info.get("streams") or []
    if not streams or streams[0].get("codec_type") != "audio":
        raise InvalidRequest(field, "this file has no audio in it (send MP3, WAV, OGG, FLAC "
                             "or M4A)")
    if info.get("format", {}).get("format_name", "").startswith(("image2", "png_pipe",
                                                                 "jpeg_pipe")):
        raise InvalidRequest(field, "this is a picture, not audio")
    for value in (streams[0].get("duration"), info.get("format", {}).get("duration")):
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return 0.0  # unknown length (raw streams): the full decode below measures it


async def _convert(config: Config, field: str, source: Path, channels: int) -> Clip:
    """Decode the whole file to WAV (a corrupt file fails here) and store it by its hash."""
    folder = prompts_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(suffix=".wav", dir=folder)
    os.close(handle)
    temp = Path(temp_name)
    try:
        limit = config.limits.max_clip_s
        # -xerror: stop on the first decoding error instead of skipping broken frames.
        ok = await _run(["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-y", "-i",
                         os.fspath(source), "-vn", "-t", f"{limit + 1:g}", "-ac", str(channels),
                         "-ar", str(MODEL_SAMPLE_RATE), "-c:a", "pcm_s16le", "-f", "wav",
                         os.fspath(temp)], CONVERT_TIMEOUT_S)
        frames = _wav_frames(temp, channels) if ok is not None else 0
        if frames <= 0:
            raise InvalidRequest(field, "the file is damaged or not audio; it could not be "
                                 "decoded")
        duration = frames / MODEL_SAMPLE_RATE
        if duration > limit:
            raise InvalidRequest(field, f"the clip is longer than {limit:g} s")
        if duration < config.limits.min_clip_s:
            raise InvalidRequest(field, f"the clip is {duration:.1f} s long; give at least "
                                 f"{config.limits.min_clip_s:g} s")
        digest = hashlib.sha256(temp.read_bytes()).hexdigest()
        final = folder / f"{digest}.wav"
        os.replace(temp, final)
        return Clip(final, digest, duration, channels)
    finally:
        temp.unlink(missing_ok=True)


def _wav_frames(path: Path, channels: int) -> int:
    """Frames of a 16-bit WAV ffmpeg wrote (data chunk bytes / frame size), 0 if unreadable."""
    import wave

    try:
        with wave.open(os.fspath(path), "rb") as wav:
            return wav.getnframes() if wav.getnchannels() == channels else 0
    except (OSError, EOFError, wave.Error):
        return 0


async def _run(argv: list[str], timeout: float) -> bytes | None:
    """stdout of ``argv``, or None if it failed or ran past ``timeout``."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        return None
    return out if process.returncode == 0 else None


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"
