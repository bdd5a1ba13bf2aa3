"""The track page in real headless Chromium against the real server and a worker-made track.

A member's track is made by the real worker with the debug model (random weights: noise),
shared through the core, and served by uvicorn on 127.0.0.1. The browser must load the
audio, draw the waveform on the canvas and move the playhead on click, and a download link
must give a valid file. ``docs/track-page.png`` is this test's screenshot (refreshed when
``MUSICBOT_SCREENSHOT=1``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config
from bot.core.models import Actor, Destination, MusicRequest
from bot.core.service import MusicService
from bot.platforms.web.context import WebContext
from bot.platforms.web.server import create_app
from tests.pages.conftest import serve

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "track-page.png"
SECONDS = 3.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                       reason=f"Chromium is not installed at {CHROMIUM} (apt-get install "
                              "chromium); the browser test needs it"),
]
# playwright is in the lock (the test extra): a missing install must fail, not skip.
import playwright.async_api as playwright_api  # noqa: E402

MEMBER = Actor("discord", "guild-1", "alice")


@pytest.fixture
def worker_config(config: Config) -> Config:
    return dataclasses.replace(
        config, models=dataclasses.replace(config.models, default="debug"),
        generation=dataclasses.replace(config.generation, device="cpu", max_batch=1))


@pytest.fixture
async def worker_service(worker_config: Config) -> AsyncIterator[MusicService]:
    from bot.core.db import Database

    db = await Database(worker_config.database_path).open()
    service = MusicService(worker_config, db)
    await service.start()
    yield service
    await service.drain_events()
    await db.close()


async def worker_made_track(service: MusicService, config: Config) -> Any:
    """Queue as a member, render with the real worker and debug model, share as the owner."""
    from generation.engine import Engine
    from generation.worker import Worker

    request = MusicRequest(prompt='night drive <synthwave> & "neon" rain', duration=SECONDS,
                           model="debug", seed=42, genre="synthwave", tempo=96)
    receipt = await service.request_music(
        MEMBER, request, Destination("discord", "guild-1", "chan", "alice"), "page-browser-1")
    engine = await asyncio.to_thread(Engine.load, "debug", "cpu", max_duration=4.0,
                                     extend_stride_s=2.0)
    worker = Worker(service.settlement, {"debug": engine}, config)
    assert await worker.run_until_idle() == 1
    return await service.sharing.share(MEMBER, receipt.job.id)


async def test_the_page_plays_draws_and_downloads_in_chromium(
        worker_service: MusicService, worker_config: Config, tmp_path: Path) -> None:
    job = await worker_made_track(worker_service, worker_config)
    assert job.track is not None and job.track.noise
    server, task, base = await serve(create_app(WebContext(worker_service, worker_config)))
    try:
        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox"] if os.geteuid() == 0 else [])
            try:
                page = await browser.new_page(viewport={"width": 900, "height": 760})
                await check_page(page, f"{base}/t/{job.share_id}", job.track.duration_s,
                                 tmp_path)
            finally:
                await browser.close()
    finally:
        server.should_exit = True
        await task


async def check_page(page: Any, url: str, seconds: float, tmp_path: Path) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # the media element aborts its own range requests when it seeks: not an error
    page.on("requestfailed", lambda req: req.url.endswith("/audio")
            or errors.append(f"failed: {req.url}"))
    response = await page.goto(url)
    assert response.status == 200
    assert await page.inner_text("#prompt") == 'night drive <synthwave> & "neon" rain'
    assert "this audio is noise" in await page.inner_text("main")

    # the audio element loads the track's metadata: its duration is the track's
    await page.wait_for_function(
        "document.getElementById('audio').readyState >= 1", timeout=20_000)
    duration = await page.evaluate("document.getElementById('audio').duration")
    assert duration == pytest.approx(seconds, abs=0.15)

    # the waveform was fetched and drawn: many non-blank pixels on the canvas
    await page.wait_for_function(
        "Number(document.getElementById('player').dataset.drawn) > 0", timeout=20_000)
    assert await painted_pixels(page) > 2_000

    # click-to-seek: clicking at 3/4 of the waveform moves the audio there
    box = await page.locator("#waveform").bounding_box()
    await page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] / 2)
    position = await page.evaluate("document.getElementById('audio').currentTime")
    assert position == pytest.approx(seconds * 0.75, abs=0.2)

    if os.environ.get("MUSICBOT_SCREENSHOT") == "1" or not SCREENSHOT.exists():
        await page.screenshot(path=str(SCREENSHOT), full_page=True)

    # a download link gives a valid file (WAV converted on demand from the stored MP3)
    async with page.expect_download() as info:
        await page.click("a[href$='/download/wav']")
    download = await info.value
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    assert saved.suffix == ".wav"
    assert probe_seconds(saved) == pytest.approx(seconds, abs=0.15)
    assert errors == []


async def painted_pixels(page: Any) -> int:
    return int(await page.evaluate("""() => {
        const c = document.getElementById('waveform');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n;
    }"""))


def probe_seconds(path: Path) -> float:
    ffprobe = shutil.which("ffprobe")
    assert ffprobe, "ffprobe is needed to check the download"
    out = subprocess.run([ffprobe, "-v", "error", "-show_entries", "format=duration", "-of",
                          "csv=p=0", str(path)], check=True, capture_output=True, text=True)
    return float(out.stdout.strip())
