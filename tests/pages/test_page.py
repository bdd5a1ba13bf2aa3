"""The track page over real HTTP: what a visitor with the link gets, and what others don't."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from bot.core.service import MusicService
from tests.core.conftest import member
from tests.pages.conftest import MakeTrack


def probe(path: Path) -> dict[str, str]:
    """ffprobe's view of a file: format name and duration (fails on a broken file)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=format_name,duration",
         "-of", "json", str(path)], check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out)["format"])


async def test_a_shared_track_has_a_page_with_prompt_settings_player_and_downloads(
        base_url: str, made: MakeTrack) -> None:
    job = await made("lofi <b>beat</b> & rain", genre="jazz", tempo=90, seed=7)
    async with httpx.AsyncClient(base_url=base_url) as http:
        page = await http.get(f"/t/{job.share_id}")
    assert page.status_code == 200
    body = page.text
    assert "lofi &lt;b&gt;beat&lt;/b&gt; &amp; rain" in body and "<b>beat" not in body
    for shown in ("jazz", "90 BPM", ">7<", "temperature 1", "top-k 250", ">small<"):
        assert shown in body, shown
    assert f'<audio id="audio" controls preload="metadata" src="/t/{job.share_id}/audio">' in body
    assert '<canvas id="waveform"' in body
    for fmt in ("mp3", "wav", "flac", "ogg"):
        assert f'href="/t/{job.share_id}/download/{fmt}"' in body
    assert "noise" not in body.lower()


async def test_the_page_loads_nothing_from_other_hosts(base_url: str, made: MakeTrack) -> None:
    job = await made()
    async with httpx.AsyncClient(base_url=base_url) as http:
        page = await http.get(f"/t/{job.share_id}")
        links = re.findall(r'(?:src|href)="([^"]*)"', page.text)
        assert links and all(link.startswith("/") and not link.startswith("//")
                             for link in links), links
        for asset in ("/assets/track-page.js", "/assets/track-page.css"):
            assert (await http.get(asset)).status_code == 200
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "noindex" in page.headers["x-robots-tag"]


async def test_a_script_in_the_prompt_stays_text(base_url: str, made: MakeTrack) -> None:
    job = await made('<script>alert("x")</script><img src=x onerror=alert(1)>')
    async with httpx.AsyncClient(base_url=base_url) as http:
        body = (await http.get(f"/t/{job.share_id}")).text
    assert "<script>alert" not in body and "<img src=x" not in body
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body


async def test_noise_from_the_debug_model_is_labelled(base_url: str, made: MakeTrack) -> None:
    job = await made(noise=True)
    async with httpx.AsyncClient(base_url=base_url) as http:
        body = (await http.get(f"/t/{job.share_id}")).text
    assert "this audio is noise" in body


async def test_audio_supports_range_requests_for_seeking(base_url: str, made: MakeTrack) -> None:
    job = await made(seconds=4.0)
    assert job.track_path
    stored = Path(job.track_path).read_bytes()
    async with httpx.AsyncClient(base_url=base_url) as http:
        whole = await http.get(f"/t/{job.share_id}/audio")
        part = await http.get(f"/t/{job.share_id}/audio", headers={"Range": "bytes=100-199"})
    assert whole.status_code == 200 and whole.content == stored
    assert whole.headers["content-type"] == "audio/mpeg"
    assert whole.headers["accept-ranges"] == "bytes"
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-199/{len(stored)}"
    assert part.content == stored[100:200]
    async with httpx.AsyncClient(base_url=base_url) as http:
        head = await http.head(f"/t/{job.share_id}/audio")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(stored))


async def test_waveform_data_is_served_for_the_player(base_url: str, made: MakeTrack) -> None:
    job = await made(seconds=2.0)
    async with httpx.AsyncClient(base_url=base_url) as http:
        data = (await http.get(f"/t/{job.share_id}/waveform.json")).json()
    assert data["version"] == 1 and data["points"] == len(data["peaks"]) > 100
    assert abs(data["duration_s"] - 2.0) < 0.05
    assert max(high for _, high in data["peaks"]) > 0.1


@pytest.mark.parametrize(("fmt", "ffprobe_name"), [
    ("mp3", "mp3"), ("wav", "wav"), ("flac", "flac"), ("ogg", "ogg")])
async def test_every_download_format_is_a_valid_file(
        base_url: str, made: MakeTrack, tmp_path: Path, fmt: str, ffprobe_name: str) -> None:
    job = await made(seconds=2.0)
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        first = await http.get(f"/t/{job.share_id}/download/{fmt}")
        again = await http.get(f"/t/{job.share_id}/download/{fmt}")
    assert first.status_code == again.status_code == 200
    assert f'filename="musicbot-{job.share_id}.{fmt}"' in first.headers["content-disposition"]
    assert first.content == again.content  # the cached conversion, not a new one
    file = tmp_path / f"download.{fmt}"
    file.write_bytes(first.content)
    info = probe(file)
    assert ffprobe_name in info["format_name"]
    assert abs(float(info["duration"]) - 2.0) < 0.15


async def test_unknown_and_unshared_tracks_are_404_everywhere(
        base_url: str, made: MakeTrack, service: MusicService) -> None:
    private = await made(share=False)
    shared = await made()
    old = shared.share_id
    await service.sharing.unshare(member("alice"), shared.id)
    async with httpx.AsyncClient(base_url=base_url) as http:
        for share_id in ("doesnotexist1234", old, str(private.id)):
            page = await http.get(f"/t/{share_id}")
            assert page.status_code == 404 and "Track not found" in page.text
            for tail in ("audio", "waveform.json", "download/mp3", "download/wav",
                         "stems/drums"):
                assert (await http.get(f"/t/{share_id}/{tail}")).status_code == 404, tail
        assert (await http.get(f"/t/{private.id}")).status_code == 404


async def test_only_offered_formats_and_assets_are_served(
        base_url: str, made: MakeTrack) -> None:
    job = await made()
    async with httpx.AsyncClient(base_url=base_url) as http:
        assert (await http.get(f"/t/{job.share_id}/download/exe")).status_code == 404
        assert (await http.get(f"/t/{job.share_id}/stems/drums")).status_code == 404
        assert (await http.get("/assets/pages.py")).status_code == 404
        assert (await http.get("/assets/..%2Fpages.py")).status_code == 404
