"""Tracks in an S3 bucket: a worker on one machine renders, a frontends process on another
delivers, re-sends (/track) and sweeps; the worker extends a track it no longer has on disk.

The bucket is a real S3-protocol server (moto's server mode on 127.0.0.1, spoken to over
HTTP by boto3), and the two "machines" are two services on one database with separate local
track folders, so nothing reaches the other side except through the bucket.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from bot.config import Config, StorageConfig
from bot.core.errors import InvalidRequest, ServiceUnavailable
from bot.core.models import JobState, Track
from bot.core.service import MusicService
from bot.media.clips import intake

from . import clip_files
from .conftest import RecordingFrontend, make_config, member, music, order

BUCKET = "musicbot-tracks"
SECRET = "s3cr3t-never-in-logs"


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def endpoint(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "musicbot-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield s3_server
    objects = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    for item in objects:
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def s3_config(tmp_path: Path, machine: str, endpoint: str) -> Config:
    base = make_config(tmp_path)
    storage = StorageConfig(kind="s3", bucket=BUCKET, endpoint_url=endpoint,
                            region="us-east-1", path=str(tmp_path / machine / "cache"))
    return dataclasses.replace(base, storage=storage)


def write_track(config: Config, job_id: int) -> Track:
    """What the worker's encoder leaves in its local folder: the audio and its waveforms."""
    folder = config.tracks_path
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{job_id}.mp3").write_bytes(b"ID3-fake-mp3-" + bytes([job_id]) * 64)
    (folder / f"{job_id}.png").write_bytes(b"\x89PNG-picture")
    (folder / f"{job_id}.waveform.json").write_text('{"version": 1}')
    return Track(str(folder / f"{job_id}.mp3"), "mp3", 5.0, 77, 32_000,
                 waveform_path=str(folder / f"{job_id}.png"),
                 waveform_data_path=str(folder / f"{job_id}.waveform.json"))


@pytest.fixture
async def machines(
    tmp_path: Path, endpoint: str, open_service: Callable[..., Any]
) -> tuple[MusicService, MusicService]:
    """(worker side without any frontend, frontends side with the recording frontend)."""
    frontends = await open_service(s3_config(tmp_path, "frontends", endpoint))
    worker = await open_service(s3_config(tmp_path, "worker", endpoint))
    worker.notifier.frontends.clear()  # a worker process has no chat connection
    return worker, frontends


async def render_one(worker: MusicService, frontends: MusicService) -> int:
    await order(frontends, member())
    [job] = await worker.settlement.claim(1)
    rendered = await worker.settlement.rendered(job, write_track(worker.config, job.id))
    assert rendered.state is JobState.RENDERED
    return job.id


async def test_a_track_rendered_on_one_machine_is_delivered_from_another(
    machines: tuple[MusicService, MusicService], frontend: RecordingFrontend
) -> None:
    worker, frontends = machines
    job_id = await render_one(worker, frontends)

    assert await frontends.delivery.deliver_due() == 1
    sent = frontend.delivered[job_id]
    assert Path(sent.path).parent == frontends.config.tracks_path
    made = worker.config.tracks_path / f"{job_id}.mp3"
    assert Path(sent.path).read_bytes() == made.read_bytes()
    assert sent.waveform_path and Path(sent.waveform_path).read_bytes() == b"\x89PNG-picture"
    assert (await frontends.get_job(job_id)).state is JobState.DONE


async def test_a_stems_job_reaches_the_other_machine_with_every_stem(
    machines: tuple[MusicService, MusicService], frontend: RecordingFrontend
) -> None:
    worker, frontends = machines
    await order(frontends, member())
    [job] = await worker.settlement.claim(1)
    track = write_track(worker.config, job.id)
    stems = {}
    for name in ("drums", "bass", "other", "vocals"):
        stem = worker.config.tracks_path / f"{job.id}.{name}.mp3"
        stem.write_bytes(f"ID3-{name}".encode())
        stems[name] = str(stem)
    await worker.settlement.rendered(job, dataclasses.replace(track, stems=stems))
    shutil.rmtree(worker.config.tracks_path)  # only the bucket has them now

    assert await frontends.delivery.deliver_due() == 1
    sent = frontend.delivered[job.id]
    assert sent.stems is not None and set(sent.stems) == set(stems)
    for name, path in sent.stems.items():
        assert Path(path).parent == frontends.config.tracks_path
        assert Path(path).read_bytes() == f"ID3-{name}".encode()


async def test_track_sends_it_again_after_the_local_copy_is_gone(
    machines: tuple[MusicService, MusicService]
) -> None:
    worker, frontends = machines
    job_id = await render_one(worker, frontends)
    shutil.rmtree(worker.config.tracks_path)  # the worker machine is gone, too

    _, track = await frontends.stored_track(member(), job_id)
    assert Path(track.path).read_bytes().startswith(b"ID3-fake-mp3-")


async def test_a_worker_extends_a_track_it_never_had_on_disk(
    machines: tuple[MusicService, MusicService]
) -> None:
    worker, frontends = machines
    job_id = await render_one(worker, frontends)
    shutil.rmtree(worker.config.tracks_path)  # another worker machine takes the extension

    source = await worker.settlement.source_track(job_id)
    assert source is not None and Path(source).read_bytes().startswith(b"ID3-fake-mp3-")


async def test_the_retention_sweep_empties_the_bucket_and_track_says_so(
    machines: tuple[MusicService, MusicService]
) -> None:
    worker, frontends = machines
    job_id = await render_one(worker, frontends)

    assert await frontends.tracks.sweep(cutoff=4_000_000_000.0) >= 3
    shutil.rmtree(worker.config.tracks_path)
    with pytest.raises(InvalidRequest, match="no longer stored"):
        await frontends.stored_track(member(), job_id)


async def test_an_unreachable_bucket_puts_the_job_back_and_never_logs_the_secret(
    tmp_path: Path, endpoint: str, open_service: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = s3_config(tmp_path, "worker", "http://127.0.0.1:9")  # nothing listens there
    worker = await open_service(broken)
    await order(worker, member())
    [job] = await worker.settlement.claim(1)
    with caplog.at_level(logging.DEBUG):
        after = await worker.settlement.rendered(job, write_track(broken, job.id))

    assert after.state is JobState.QUEUED and after.refunded == 0  # retried, nothing charged
    assert "could not be stored" in (after.error or "")
    assert SECRET not in caplog.text


async def test_a_members_clip_reaches_a_worker_that_never_saw_it(
    machines: tuple[MusicService, MusicService], tmp_path: Path
) -> None:
    worker, frontends = machines
    clip = await intake(frontends.config, "audio", clip_files.sine(tmp_path / "riff.mp3", 1.0))
    taken = clip.path.read_bytes()
    await order(frontends, member(), music(audio=str(clip.path)))
    shutil.rmtree(clip.path.parent)  # the worker's machine has no copy of the frontends' disk

    [job] = await worker.settlement.claim(1)
    here = await worker.settlement.clip_file(job.params.audio_prompt or "")
    assert here is not None and Path(here).read_bytes() == taken


async def test_a_clip_the_bucket_cannot_take_is_refused_before_any_charge(
    tmp_path: Path, endpoint: str, open_service: Callable[..., Any],
) -> None:
    frontends = await open_service(s3_config(tmp_path, "frontends", "http://127.0.0.1:9"))
    clip = await intake(frontends.config, "audio", clip_files.sine(tmp_path / "riff.mp3", 1.0))
    before = await frontends.balance(member())
    with pytest.raises(ServiceUnavailable, match="nothing was charged"):
        await order(frontends, member(), music(audio=str(clip.path)))
    assert await frontends.balance(member()) == before
    assert await frontends.history(member()) == []


async def test_a_shared_folder_mounted_elsewhere_still_delivers(
    tmp_path: Path, open_service: Callable[..., Any], frontend: RecordingFrontend
) -> None:
    """``storage.kind: directory``: the worker's machine mounts the volume at another path."""
    volume = tmp_path / "volume"
    here = dataclasses.replace(make_config(tmp_path),
                               storage=StorageConfig(kind="directory", path=str(volume)))
    frontends = await open_service(here)
    await order(frontends, member())
    [job] = await frontends.settlement.claim(1)
    written = write_track(here, job.id)
    elsewhere = "/mnt/worker-7/tracks"  # what the worker wrote in the row
    moved = dataclasses.replace(written, path=f"{elsewhere}/{job.id}.mp3",
                                waveform_path=f"{elsewhere}/{job.id}.png",
                                waveform_data_path=f"{elsewhere}/{job.id}.waveform.json")
    await frontends.settlement.rendered(job, moved)

    assert await frontends.delivery.deliver_due() == 1
    assert frontend.delivered[job.id].path == str(volume / f"{job.id}.mp3")
    _, again = await frontends.stored_track(member(), job.id)
    assert Path(again.path).read_bytes().startswith(b"ID3-fake-mp3-")


async def test_a_clip_is_kept_on_the_shared_folder_for_workers_elsewhere(
    tmp_path: Path, open_service: Callable[..., Any]
) -> None:
    volume = tmp_path / "volume"
    here = dataclasses.replace(make_config(tmp_path),
                               storage=StorageConfig(kind="directory", path=str(volume)))
    frontends = await open_service(here)
    clip = await intake(here, "audio", clip_files.sine(tmp_path / "riff.wav", 1.0))
    await order(frontends, member(), music(audio=str(clip.path)))

    assert (volume / clip.path.name).read_bytes() == clip.path.read_bytes()
    shutil.rmtree(clip.path.parent)  # a worker mounting only the volume still finds it
    [job] = await frontends.settlement.claim(1)
    found = await frontends.settlement.clip_file(job.params.audio_prompt or "")
    assert found == str(volume / clip.path.name)
