"""The API's completion webhook and stems, end to end: a signed POST reaches the member's
receiver when the track is done, and stems requested over HTTP come back as four files."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bot.platforms.web.webhooks import SIGNATURE_HEADER, verify
from tests.api.conftest import OLGA, World, api_config, open_world
from tests.api.test_flow import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    base = api_config(tmp_path)
    config = dataclasses.replace(
        base, models=dataclasses.replace(base.models, stems="debug"),
        # The receiver below listens on loopback: a LAN-only operator's choice.
        api=dataclasses.replace(base.api, webhooks_allow_private=True))
    world = await open_world(config, monkeypatch)
    try:
        yield world
    finally:
        await world.app.stop()


class _Hook(BaseHTTPRequestHandler):
    got: queue.Queue[tuple[dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.got.put((dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, queue.Queue[tuple[dict[str, str], bytes]]]]:
    """A member's webhook endpoint on 127.0.0.1 (its own thread, like a separate service);
    yields its URL and what it received."""
    handler = type("Hook", (_Hook,), {"got": queue.Queue()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", handler.got
    finally:
        server.shutdown()
        server.server_close()


async def test_done_track_posts_a_signed_webhook_with_the_track_object(
    world: World, receiver: tuple[str, queue.Queue[tuple[dict[str, str], bytes]]]
) -> None:
    url, got = receiver
    made = await world.service.apikeys.create(OLGA, "hooks")
    async with world.client(made.secret) as client:
        accepted = await client.post("/v1/music/generate", json={
            "prompt": "dub techno", "duration": 1, "webhook_url": url})
        assert accepted.status_code == 202, accepted.text
        headers, body = await asyncio.to_thread(got.get, True, 300)
    assert verify(made.webhook_secret, headers[SIGNATURE_HEADER], body)
    assert not verify("whsec_someone-else", headers[SIGNATURE_HEADER], body)
    track: dict[str, Any] = json.loads(body)
    assert track["id"] == accepted.json()["id"] and track["status"] == "completed"


async def test_a_webhook_to_loopback_is_refused_unless_the_operator_allows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = await open_world(api_config(tmp_path), monkeypatch, worker=False)
    try:
        made = await world.service.apikeys.create(OLGA, "hooks")
        before = await world.ledger_rows()
        async with world.client(made.secret) as client:
            refused = await client.post("/v1/music/generate", json={
                "prompt": "dub techno", "duration": 1,
                "webhook_url": "http://127.0.0.1:9/hook"})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["field"] == "webhook_url"
        assert await world.ledger_rows() == before
    finally:
        await world.app.stop()


async def test_stems_over_http_come_back_as_four_files(world: World) -> None:
    made = await world.service.apikeys.create(OLGA, "stems")
    async with world.client(made.secret) as client:
        accepted = await client.post("/v1/music/generate", json={"prompt": "funk", "duration": 1})
        source = await wait_until(client, accepted.json()["id"], "completed", "failed")
        assert source["status"] == "completed" and source["stems"] is None
        asked = await client.post(f"/v1/music/{source['id']}/stems")
        assert asked.status_code == 202, asked.text
        split = await wait_until(client, asked.json()["id"], "completed", "failed")
        assert split["status"] == "completed", split
        # with random Demucs weights the stems are noise; the files and their names are real
        assert sorted(split["stems"]) == ["bass", "drums", "other", "vocals"]
        again = (await client.get(f"/v1/music/{source['id']}")).json()
        assert again["stems"] == split["stems"]
        drums = await client.get(split["stems"]["drums"])
        assert drums.status_code == 200 and drums.content[:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3")
