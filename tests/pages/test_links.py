"""What chat messages say about a track's page, per platform and configuration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bot.config import Config
from bot.core.models import AccountKey, Destination, GenerationParams, Job, JobState
from bot.platforms import render
from tests.pages.conftest import with_api

BASE = "https://music.example.org"


def job(share_id: str | None) -> Job:
    return Job(id=12, account=AccountKey("discord", "g", "u"),
               params=GenerationParams("lofi", 5.0, "small", 7), state=JobState.DONE, price=10,
               idempotency_key="k", destination=Destination("discord", "g", "c", "u"),
               attempts=1, max_attempts=1, error=None, cancel_requested=False, created_at=0.0,
               started_at=None, finished_at=None, track_path=None, share_id=share_id)


def test_no_public_base_url_means_no_page_line(config: Config) -> None:
    assert render.page_line(config, job("abcdefghijklmnop"), "discord") == ""
    assert render.page_line(config, job(None), "slack") == ""


def test_a_shared_track_links_its_page_on_every_platform(config: Config) -> None:
    config = with_api(config, public_base_url=BASE + "/")
    shared = job("abcdefghijklmnop")
    url = f"{BASE}/t/abcdefghijklmnop"
    assert render.page_line(config, shared, "discord") == f"🔗 Track page: <{url}>"
    assert render.page_line(config, shared, "slack") == f"🔗 Track page: <{url}>"
    assert render.page_line(config, shared, "console") == f"🔗 Track page: {url}"


def test_a_private_track_gets_the_platforms_share_command(config: Config) -> None:
    config = with_api(config, public_base_url=BASE)
    assert "`/share job:12`" in render.page_line(config, job(None), "discord")
    assert "`/music share 12`" in render.page_line(config, job(None), "slack")
    assert "`/share 12`" in render.page_line(config, job(None), "console")


def test_the_share_answer_says_where_the_page_is(config: Config, tmp_path: Path) -> None:
    shared = job("abcdefghijklmnop")
    with_url = render.shared_text(with_api(config, public_base_url=BASE), shared, "slack")
    assert f"<{BASE}/t/abcdefghijklmnop>" in with_url and "`/music unshare 12`" in with_url
    served = render.shared_text(with_api(config, enabled=True), shared, "discord")
    assert "`/t/abcdefghijklmnop`" in served and "ask the operator" in served
    off = render.shared_text(dataclasses.replace(config), shared, "discord")
    assert "api.enabled" in off


def test_the_finished_track_message_ends_with_the_page_line(config: Config) -> None:
    from bot.core.models import Track

    track = Track("/x.mp3", "mp3", 5.0, 1000, 32_000)
    text = render.result_text(job(None), track, link="🔗 Track page: <x>")
    assert text.endswith("\n🔗 Track page: <x>")
    assert "🔗" not in render.result_text(job(None), track)
