"""Track storage that every process can reach: a folder (shared volume) or an S3 bucket.

The worker encodes a track into its local tracks folder (``Config.tracks_path``) and then
:meth:`TrackStore.save` makes it reachable to the other processes; a frontends process calls
:meth:`TrackStore.local` before it uploads the file to a chat platform or sends it again
(``/track``), and the worker calls :meth:`TrackStore.local_file` for the audio an extension
continues. A member's clip (audio prompt, melody) goes the other way: the frontends process
that took it stores it with :meth:`TrackStore.save_file` before charging, and the worker
fetches it by name. A track is known everywhere by its file *name* (``12.mp3``, ``12.png``,
``12.waveform.json``): the path in the job row is where the rendering process wrote it, and
another machine may mount the shared volume elsewhere, so every process resolves the name
against its own folder.

``s3`` keeps the local folder as a cache: files are uploaded after rendering and downloaded
on first use. Credentials come only from the environment (boto3's own chain:
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``), never from the config file or the logs.
boto3 is blocking, so every call runs in a thread; it is imported only when ``s3`` is chosen.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from bot.config import Config, StorageConfig
from bot.core.errors import MusicBotError
from bot.core.models import Track

log = logging.getLogger(__name__)


class StorageError(MusicBotError):
    """The track store could not be reached or refused a file; nothing was committed."""

    code = "storage"


class TrackStore(Protocol):
    """Where finished tracks are kept for every process of the bot."""

    kind: str

    async def save(self, track: Track) -> Track:
        """Make a freshly written local track (and its waveform files) reachable to every
        process. Raises :class:`StorageError`."""

    async def local(self, track: Track) -> Track | None:
        """The track with paths in this process's folder (fetched if needed); None if the
        audio file is gone (retention). Raises :class:`StorageError` if unreachable."""

    async def local_file(self, path: str) -> Path | None:
        """One stored file (by the path a job row recorded) on local disk, or None if gone."""

    async def save_file(self, path: str) -> None:
        """Make one local file (a member's stored clip) reachable by name to every process,
        for :meth:`local_file` there. Raises :class:`StorageError`."""

    async def sweep(self, cutoff: float) -> int:
        """Delete tracks last written before ``cutoff`` (unix seconds); returns how many."""


def open_store(config: Config) -> TrackStore:
    """The store ``config.storage`` names."""
    if config.storage.kind == "s3":
        return S3Store(config.storage, config.tracks_path)
    return DirectoryStore(config.tracks_path)


def _with_folder(track: Track, folder: Path) -> Track:
    """``track`` with each file's path moved to ``folder`` (same names)."""

    def moved(path: str | None) -> str | None:
        return str(folder / Path(path).name) if path else None

    stems = track.stems and {name: str(folder / Path(path).name)
                             for name, path in track.stems.items()}
    return dataclasses.replace(track, path=str(folder / Path(track.path).name),
                               waveform_path=moved(track.waveform_path),
                               waveform_data_path=moved(track.waveform_data_path),
                               stems=stems)


def _files(track: Track) -> list[str]:
    """Every file of a track: the audio (a stems job's zip), its waveforms, each stem."""
    return [p for p in (track.path, track.waveform_path, track.waveform_data_path,
                        *(track.stems or {}).values()) if p]


def sweep_folder(folder: Path, cutoff: float) -> int:
    """Delete files in ``folder`` last modified before ``cutoff``; returns how many."""
    if not folder.is_dir():
        return 0
    deleted = 0
    for path in folder.iterdir():
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                deleted += 1
        except FileNotFoundError:
            continue  # removed concurrently (another process sweeping the shared volume)
    return deleted


class DirectoryStore:
    """Tracks in one folder; on several machines, a shared volume mounted on each."""

    kind = "directory"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def save(self, track: Track) -> Track:
        return track  # the worker wrote it into the folder already

    async def local(self, track: Track) -> Track | None:
        if Path(track.path).is_file():
            return track  # written on this machine, or the volume is mounted at the same path
        here = _with_folder(track, self.folder)
        return here if Path(here.path).is_file() else None

    async def local_file(self, path: str) -> Path | None:
        for here in (Path(path), self.folder / Path(path).name):
            if here.is_file():
                return here
        return None

    async def save_file(self, path: str) -> None:
        await asyncio.to_thread(self._copy_in, Path(path))

    def _copy_in(self, source: Path) -> None:
        target = self.folder / source.name
        if target == source:
            return
        if target.is_file():  # named by content: the same name is the same clip
            os.utime(target)  # used again: the retention sweep counts from now
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f"{source.name}.{os.getpid()}.part")
        try:
            try:
                os.link(source, part)  # same file system: no second copy of the bytes
            except OSError:
                shutil.copyfile(source, part)
            os.replace(part, target)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise StorageError(f"could not store {source.name} in {self.folder}: "
                               f"{type(exc).__name__}") from exc

    async def sweep(self, cutoff: float) -> int:
        return await asyncio.to_thread(sweep_folder, self.folder, cutoff)


class S3Store:
    """Tracks as objects ``<prefix><name>`` in an S3-compatible bucket, cached locally."""

    kind = "s3"

    def __init__(self, settings: StorageConfig, cache: Path) -> None:
        self.settings = settings
        self.cache = cache
        self._client: Any = None
        self._client_lock = threading.Lock()

    def key(self, name: str) -> str:
        return f"{self.settings.prefix}{name}"

    async def save(self, track: Track) -> Track:
        await asyncio.to_thread(self._upload, _files(track))
        return track

    async def local(self, track: Track) -> Track | None:
        if await self.local_file(track.path) is None:
            return None
        here = _with_folder(track, self.cache)
        # The waveform files are a nicety: a track whose pictures are gone is still delivered.
        picture = here.waveform_path
        if picture and await self.local_file(picture) is None:
            here = dataclasses.replace(here, waveform_path=None)
        peaks = here.waveform_data_path
        if peaks and await self.local_file(peaks) is None:
            here = dataclasses.replace(here, waveform_data_path=None)
        for stem in (here.stems or {}).values():  # uploaded one by one beside the zip
            if await self.local_file(stem) is None:
                return None  # the zip without its stems is not the track that was rendered
        return here

    async def local_file(self, path: str) -> Path | None:
        return await asyncio.to_thread(self._download, Path(path).name)

    async def save_file(self, path: str) -> None:
        await asyncio.to_thread(self._upload, [path])

    async def sweep(self, cutoff: float) -> int:
        return await asyncio.to_thread(self._sweep, cutoff)

    # ------------------------------------------------------------ blocking, in a thread

    def client(self) -> Any:
        """The boto3 client, made once (clients are thread-safe; making one is not)."""
        with self._client_lock:
            if self._client is None:
                import boto3  # type: ignore[import-untyped]  # only a bot that stores tracks in S3 pays for importing it

                s = self.settings
                self._client = boto3.client("s3", endpoint_url=s.endpoint_url or None,
                                            region_name=s.region or None)
            return self._client

    def _upload(self, paths: list[str]) -> None:
        for path in paths:
            try:
                self.client().upload_file(path, self.settings.bucket, self.key(Path(path).name))
            except Exception as exc:  # botocore's errors, OSError: one message, no secrets
                raise StorageError(f"could not store {Path(path).name} in bucket "
                                   f"{self.settings.bucket}: {type(exc).__name__}") from exc

    def _download(self, name: str) -> Path | None:
        target = self.cache / name
        if target.is_file():
            return target  # objects are written once and never change: the cache is valid
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        self.cache.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f"{name}.{os.getpid()}.part")
        try:
            self.client().download_file(self.settings.bucket, self.key(name), str(part))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return None
            raise StorageError(f"could not fetch {name} from bucket "
                               f"{self.settings.bucket}: {type(exc).__name__}") from exc
        except Exception as exc:
            raise StorageError(f"could not fetch {name} from bucket "
                               f"{self.settings.bucket}: {type(exc).__name__}") from exc
        os.replace(part, target)
        return target

    def _sweep(self, cutoff: float) -> int:
        deleted = sweep_folder(self.cache, cutoff)
        pages = self.client().get_paginator("list_objects_v2").paginate(
            Bucket=self.settings.bucket, Prefix=self.settings.prefix)
        for page in pages:
            old = [{"Key": o["Key"]} for o in page.get("Contents", [])
                   if o["LastModified"].timestamp() < cutoff]
            if old:
                self.client().delete_objects(Bucket=self.settings.bucket,
                                             Delete={"Objects": old, "Quiet": True})
                deleted += len(old)
        return deleted


def retention_cutoff(config: Config, now: float | None = None) -> float | None:
    """Files written before this are past ``audio.retention_days`` (None: keep forever)."""
    days = config.audio.retention_days
    if days <= 0:
        return None
    return (time.time() if now is None else now) - days * 86400
