"""Finishing a generated track: loudness, fade-out, encoding, waveform picture, storage.

Everything here is plain numpy + FFmpeg + Pillow; no torch. MP3 is encoded in-process with
FFmpeg's libmp3lame through PyAV (falls back to the ``ffmpeg`` command via pydub); the other
formats go through pydub and the ``ffmpeg`` command. The functions are
synchronous and CPU-bound; :func:`store_track` runs them off the event loop.

Loudness is ITU-R BS.1770 integrated loudness (pyloudnorm: K-weighting, gating), measured and
normalised to ``audio.target_lufs``; the gain is then capped so the highest *sample* peak stays
at or below -1 dBFS (a sample-peak ceiling, not an oversampled true peak: inter-sample peaks
of up to ~0.5 dB above it can remain). A quiet target may therefore not be reached on very
dynamic audio; the stored ``loudness_lufs`` is measured after normalisation, so it is what
the member gets. Audio shorter than BS.1770's 400 ms block has no integrated loudness: it is
levelled by RMS dBFS instead, and its ``loudness_lufs`` is left unknown.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
import math
import os
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pydub import AudioSegment
from pydub.exceptions import CouldntEncodeError

from bot.config import AudioConfig, Config
from bot.core.models import Track
from generation.analysis import Analysis, analyse, integrated_loudness
from generation.errors import GenerationError, TrackTooLarge

log = logging.getLogger(__name__)

PEAK_CEILING_DB = -1.0
MP3_BITRATES = (320, 256, 224, 192, 160, 128, 112, 96, 80, 64, 56, 48, 40, 32)
LOSSY = ("mp3", "ogg")
LOSSLESS = ("wav", "flac")
_EXPORT = {
    "mp3": {"format": "mp3", "codec": "libmp3lame"},
    "ogg": {"format": "ogg", "codec": "libvorbis"},
    "flac": {"format": "flac"},
    "wav": {"format": "wav"},
}


@dataclass(frozen=True)
class Audio:
    """Float samples in -1..1, shape ``[channels, frames]``, at ``sample_rate`` Hz."""

    samples: np.ndarray
    sample_rate: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return self.samples.shape[-1] / self.sample_rate


def rms_db(samples: np.ndarray) -> float:
    """RMS level in dBFS (-inf for silence)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def normalize(audio: Audio, target_lufs: float) -> Audio:
    """Scale to ``target_lufs`` (BS.1770 integrated loudness), never peaking above -1 dBFS.

    Audio too short (< 0.4 s) or too quiet for BS.1770's gates is levelled by RMS dBFS.
    """
    level = integrated_loudness(audio.samples, audio.sample_rate)
    if level is None:
        level = rms_db(audio.samples)
    peak = float(np.max(np.abs(audio.samples))) if audio.samples.size else 0.0
    if not math.isfinite(level) or peak == 0:
        return audio
    gain = 10 ** ((target_lufs - level) / 20)
    ceiling = 10 ** (PEAK_CEILING_DB / 20)
    gain = min(gain, ceiling / peak)
    return Audio((audio.samples * gain).astype(np.float32), audio.sample_rate)


def fade_out(audio: Audio, seconds: float) -> Audio:
    """Linear fade to silence over the last ``seconds`` (at most half the track)."""
    frames = min(int(seconds * audio.sample_rate), audio.samples.shape[-1] // 2)
    if frames <= 0:
        return audio
    samples = audio.samples.copy()
    samples[:, -frames:] *= np.linspace(1.0, 0.0, frames, dtype=np.float32)
    return Audio(samples, audio.sample_rate)


def finish(audio: Audio, cfg: AudioConfig) -> Audio:
    """Apply the configured loudness normalisation and fade-out."""
    if cfg.normalize:
        audio = normalize(audio, cfg.target_lufs)
    return fade_out(audio, cfg.fade_out_s)


def to_segment(audio: Audio) -> AudioSegment:
    """16-bit PCM pydub segment (interleaved channels)."""
    pcm = np.clip(audio.samples, -1.0, 1.0)
    ints = (pcm.T * 32767).astype("<i2")
    return AudioSegment(ints.tobytes(), sample_width=2, frame_rate=audio.sample_rate,
                        channels=audio.channels)


def encode(audio: Audio, fmt: str, upload_limit: int, bitrate_kbps: int = 192) -> tuple[bytes, int]:
    """Encode to ``fmt``; lossy formats lower the bitrate until the file fits ``upload_limit``.

    Returns the bytes and the bitrate used (0 for lossless).

    Raises:
        TrackTooLarge: even the lowest bitrate (or the lossless file) is over the limit.
        GenerationError: unknown format.
    """
    if fmt not in _EXPORT:
        raise GenerationError(f"Unknown audio format '{fmt}' (use mp3, ogg, wav or flac).")
    segment = to_segment(audio)
    if fmt in LOSSLESS:
        data = _export(segment, fmt, None)
        if len(data) > upload_limit:
            raise TrackTooLarge(
                f"The {fmt} file would be {_mib(len(data))}, over the {_mib(upload_limit)} upload "
                "limit here. Ask for mp3 instead (or a shorter track)."
            )
        return data, 0
    tried: list[int] = []
    for kbps in _bitrates_to_try(audio.duration_s, upload_limit, bitrate_kbps):
        encoded = _export_or_none(segment, fmt, kbps)
        if encoded is None:
            continue  # this encoder does not offer that rate for this layout; go lower
        tried.append(kbps)
        if len(encoded) <= upload_limit:
            return encoded, kbps
    if not tried:
        raise GenerationError(f"The {fmt} encoder refused every bitrate for this track.")
    raise TrackTooLarge(
        f"Even at {tried[-1]} kbps a {audio.duration_s:.0f} s track is over the "
        f"{_mib(upload_limit)} upload limit here. Ask for a shorter track."
    )


_REFUSED: set[tuple[str, int, int, int]] = set()
"""(format, channels, sample rate, kbps) an encoder refused: not asked again this process."""


def _export_or_none(segment: AudioSegment, fmt: str, kbps: int) -> bytes | None:
    """Encode at ``kbps``, or None when the encoder has no such rate for this layout.

    libvorbis' managed bitrates depend on channels and sample rate: mono 32 kHz (every
    MusicGen model) tops out at 160 kbps, stereo 32 kHz starts at 40 kbps.
    """
    key = (fmt, segment.channels, segment.frame_rate, kbps)
    if key in _REFUSED:
        return None
    try:
        return _export(segment, fmt, kbps)
    except CouldntEncodeError:
        log.debug("%s refuses %d kbps for %d ch at %d Hz", fmt, kbps, segment.channels,
                  segment.frame_rate)
        _REFUSED.add(key)
        return None


def _bitrates_to_try(duration_s: float, limit: int, preferred: int) -> list[int]:
    """Standard bitrates <= ``preferred``, skipping those that clearly cannot fit.

    A rate the encoder refuses is skipped by the caller, so the lower rates all stay listed
    (a fitting rate is tried before any lower one).
    """
    rates = [r for r in MP3_BITRATES if r <= preferred] or [MP3_BITRATES[-1]]
    fitting = [r for r in rates if r * 125 * duration_s * 1.02 + 4096 <= limit]
    # Always try the lowest few rates, so a near miss is measured, not guessed, and an
    # encoder whose floor is above 32 kbps (stereo Vorbis) still gets a rate it accepts.
    return sorted(set(fitting) | set(rates[-3:]), reverse=True)


def _export(segment: AudioSegment, fmt: str, kbps: int | None) -> bytes:
    if fmt == "mp3" and kbps:
        try:
            return _mp3_in_process(segment, kbps)
        except Exception:  # PyAV missing or refusing: the ffmpeg command line still works
            log.debug("in-process MP3 encode failed; using the ffmpeg command", exc_info=True)
    buffer = io.BytesIO()
    kwargs = dict(_EXPORT[fmt])
    if kbps:
        kwargs["bitrate"] = f"{kbps}k"
    segment.export(buffer, **kwargs)
    return buffer.getvalue()


def _mp3_in_process(segment: AudioSegment, kbps: int) -> bytes:
    """LAME through FFmpeg's libraries (PyAV) in this process.

    Same encoder as the ``ffmpeg`` command pydub runs, without the ~60 ms process start and
    temp files per encode (measured here: 11 ms vs 72 ms for a 1 s track).
    """
    import av

    layout = "mono" if segment.channels == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=segment.frame_rate)
        stream.bit_rate = kbps * 1000
        stream.layout = layout
        pcm = np.frombuffer(segment.raw_data, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout=layout)
        frame.sample_rate = segment.frame_rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def _mib(size: int) -> str:
    """A file size for members: "9.5 MiB", or "48 KiB" below a tenth of a MiB."""
    if size < 1024 * 1024 / 10:
        return f"{max(1, round(size / 1024))} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def waveform_png(audio: Audio, path: Path, width: int = 800, height: int = 160) -> None:
    """Draw the min/max envelope of the (mixed-down) track into a PNG."""
    mono = audio.samples.mean(axis=0)
    image = Image.new("RGB", (width, height), (24, 26, 33))
    draw = ImageDraw.Draw(image)
    columns = np.array_split(mono, width) if mono.size >= width else [mono]
    mid = height / 2
    for x, chunk in enumerate(columns):
        if chunk.size == 0:
            continue
        lo, hi = float(chunk.min()), float(chunk.max())
        draw.line([(x, mid - hi * mid), (x, mid - lo * mid)], fill=(99, 179, 237))
    image.save(path, format="PNG")


WAVEFORM_POINTS = 1000
"""Columns in the waveform data: enough for a full-width player, ~16 KB of JSON."""


def waveform_peaks(audio: Audio, points: int = WAVEFORM_POINTS) -> dict[str, object]:
    """The min/max envelope of the (mixed-down) track as plain data, for players to draw.

    ``peaks`` holds ``points`` pairs ``[min, max]`` in -1..1, each covering an equal slice of
    the track (fewer pairs for a track shorter than ``points`` samples).
    """
    mono = audio.samples.mean(axis=0)
    columns = np.array_split(mono, min(points, max(1, mono.size)))
    peaks = [[round(float(c.min()), 4), round(float(c.max()), 4)] if c.size else [0.0, 0.0]
             for c in columns]
    return {
        "version": 1,
        "sample_rate": audio.sample_rate,
        "duration_s": round(audio.duration_s, 3),
        "points": len(peaks),
        "peaks": peaks,
    }


def tracks_dir(config: Config) -> Path:
    return config.tracks_path


def make_track(
    audio: Audio,
    job_id: int,
    fmt: str,
    upload_limit: int,
    config: Config,
    *,
    noise: bool = False,
) -> Track:
    """Finish, encode and store a track as ``data/tracks/<job_id>.<fmt>`` (+ waveform ``.png``
    and ``.waveform.json``)."""
    audio, facts, loudness, data = _finished(audio, fmt, upload_limit, config)
    folder = tracks_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{job_id}.{fmt}"
    _write_atomic(path, data)
    picture = data_file = None
    if config.audio.waveform:
        picture = folder / f"{job_id}.png"
        waveform_png(audio, picture)
        data_file = folder / f"{job_id}.waveform.json"
        _write_atomic(data_file, json.dumps(waveform_peaks(audio)).encode())
    return Track(
        path=str(path), format=fmt, duration_s=round(audio.duration_s, 3), size_bytes=len(data),
        sample_rate=audio.sample_rate, waveform_path=str(picture) if picture else None,
        noise=noise, waveform_data_path=str(data_file) if data_file else None,
        tempo_bpm=facts.tempo_bpm, key=facts.key,
        loudness_lufs=None if loudness is None else round(loudness, 1),
    )


def _finished(
    audio: Audio, fmt: str, upload_limit: int, config: Config
) -> tuple[Audio, Analysis, float | None, bytes]:
    """Fade/normalise, measure (tempo, key, loudness) and encode: the track's work before
    any file is written."""
    audio = finish(audio, config.audio)
    facts = analyse(audio.samples, audio.sample_rate)
    loudness = integrated_loudness(audio.samples, audio.sample_rate)
    data, _ = encode(audio, fmt, upload_limit, config.audio.bitrate_kbps)
    return audio, facts, loudness, data


def warm_up_finishing(config: Config, sample_rate: int = 32000) -> None:
    """Finish two seconds of noise as :func:`make_track` does, writing nothing, so that the
    first member's track does not pay the one-time costs: importing librosa compiles numba
    kernels (~2 s of CPU holding the GIL, which stalled every request the server was
    answering meanwhile), pyloudnorm, PyAV and the PNG drawing load on first use too."""
    noise = np.random.default_rng(0).uniform(-0.1, 0.1, (1, 2 * sample_rate))
    audio, *_ = _finished(Audio(noise.astype(np.float32), sample_rate), "mp3", 10 * 2**20,
                          config)
    waveform_png(audio, Path(os.devnull))
    waveform_peaks(audio)


async def store_track(
    audio: Audio, job_id: int, fmt: str, upload_limit: int, config: Config, *,
    noise: bool = False, executor: Executor | None = None,
) -> Track:
    """:func:`make_track` in a thread of ``executor`` (encoding is CPU-bound and would stall
    the loop; the default: the loop's default pool)."""
    return await asyncio.get_running_loop().run_in_executor(
        executor, functools.partial(make_track, audio, job_id, fmt, upload_limit, config,
                                    noise=noise))


def finish_threads(config: Config) -> int:
    """How many threads finish tracks (``generation.finish_threads``; 0: one per two CPU
    cores, at most 4)."""
    if config.generation.finish_threads:
        return config.generation.finish_threads
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def _write_atomic(path: Path, data: bytes) -> None:
    temp = path.with_suffix(path.suffix + ".part")
    temp.write_bytes(data)
    os.replace(temp, path)


def load_track(path: str | os.PathLike[str]) -> Audio:
    """Decode a stored track (any format ffmpeg reads) to float samples.

    Raises:
        GenerationError: the file is gone (retention sweep) or unreadable.
    """
    try:
        segment = AudioSegment.from_file(os.fspath(path))
    except (OSError, Exception) as exc:  # pydub raises CouldntDecodeError or OSError
        raise GenerationError(
            "The original track is no longer stored, so it cannot be extended."
            if not os.path.exists(path) else f"The stored track could not be read ({exc})."
        ) from exc
    ints = np.array(segment.get_array_of_samples(), dtype=np.float32)
    scale = float(1 << (8 * segment.sample_width - 1))
    samples = ints.reshape(-1, segment.channels).T / scale
    return Audio(np.ascontiguousarray(samples, dtype=np.float32), segment.frame_rate)


def sweep_tracks(config: Config, now: float | None = None) -> int:
    """Delete stored tracks (and pictures) older than ``audio.retention_days``; 0 keeps all.

    Returns the number of files deleted.
    """
    days = config.audio.retention_days
    folder = tracks_dir(config)
    if days <= 0 or not folder.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - days * 86400
    deleted = 0
    for path in folder.iterdir():
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                deleted += 1
        except FileNotFoundError:
            continue  # removed concurrently
    if deleted:
        log.info("retention sweep deleted %d old track files", deleted)
    return deleted
