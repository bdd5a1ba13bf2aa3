"""The whole path a script takes: a key from a chat command, generate, poll, download the
MP3, read the waveform, cancel with a refund — against the real server on a free port."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import World

pytestmark = pytest.mark.slow


async def console_key(world: World) -> str:
    result = await world.console.execute("/apikey create label:jam-build")
    assert result.ok, result.text
    found = re.search(r"mb_[0-9a-f]+_[A-Za-z0-9_-]+", result.text)
    assert found, result.text
    return found.group(0)


async def wait_until(client: httpx.AsyncClient, track_id: int, *states: str) -> dict[str, Any]:
    for _ in range(1200):
        track = (await client.get(f"/v1/music/{track_id}")).json()
        if track["status"] in states:
            return dict(track)
        await asyncio.sleep(0.1)
    raise AssertionError(f"track {track_id} never reached {states}: {track}")


def ffprobe(data: bytes, tmp_path: Path) -> dict[str, Any]:
    file = tmp_path / "got.mp3"
    file.write_bytes(data)
    out = subprocess.run(["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of",
                          "json", str(file)], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout))


async def test_key_from_console_to_mp3_waveform_and_refund(world: World, tmp_path: Path) -> None:
    key = await console_key(world)
    async with world.client(key) as client:
        before = (await client.get("/v1/balance")).json()["balance"]
        quote = (await client.get("/v1/price", params={"duration": 1})).json()
        accepted = await client.post("/v1/music/generate", json={
            "prompt": "calm lo-fi piano", "duration": 1, "seed": 7, "genre": "lofi",
            "tempo": 80})
        assert accepted.status_code == 202, accepted.text
        receipt = accepted.json()
        assert receipt["status"] == "pending" and receipt["price"] == quote["price"]
        assert receipt["balance_after"] == before - quote["price"]

        track = await wait_until(client, receipt["id"], "completed", "failed")
        assert track["status"] == "completed", track
        assert (track["seed"], track["genre"], track["tempo"]) == (7, "lofi", 80)
        assert track["cost"] == quote["price"] and track["refunded"] == 0
        assert track["share_url"] is None and track["stems"] is None

        audio = await client.get(track["download_url"])
        assert audio.status_code == 200
        assert "attachment" in audio.headers["content-disposition"]
        probe = ffprobe(audio.content, tmp_path)
        assert probe["streams"][0]["codec_name"] == "mp3"
        assert float(probe["format"]["duration"]) == pytest.approx(1.0, abs=0.2)

        part = await client.get(track["audio_url"], headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and len(part.content) == 100
        assert part.content == audio.content[:100]
        assert part.headers["content-range"].endswith(f"/{len(audio.content)}")

        peaks = (await client.get(track["waveform_url"])).json()
        assert peaks["peaks"] and peaks["duration_s"] == pytest.approx(1.0, abs=0.2)
        png = await client.get(track["waveform_png_url"])
        assert png.content.startswith(b"\x89PNG")

        listed = (await client.get("/v1/music")).json()
        assert [t["id"] for t in listed["items"]] == [receipt["id"]]

        rerolled = await client.post(f"/v1/music/{receipt['id']}/reroll")
        extended = await client.post(f"/v1/music/{receipt['id']}/extend", json={"seconds": 1})
        assert rerolled.status_code == extended.status_code == 202, extended.text
        longer = (await client.get(extended.json()["url"])).json()
        assert longer["continue_from"] == receipt["id"] and longer["duration"] == 1


async def test_cancel_refunds_and_list_pages(idle_world: World) -> None:
    world = idle_world
    key = await console_key(world)
    async with world.client(key) as client:
        start = (await client.get("/v1/balance")).json()["balance"]
        ids = []
        for n in range(3):
            made = await client.post("/v1/music/generate",
                                     json={"prompt": f"drums {n}", "duration": 1})
            assert made.status_code == 202
            ids.append(made.json()["id"])
        pending = (await client.get(f"/v1/music/{ids[2]}")).json()
        assert pending["status"] == "pending" and pending["position"] == 3
        assert pending["audio_url"] is None
        early = await client.get(f"/v1/music/{ids[2]}/audio")
        assert early.status_code == 409 and early.json()["error"]["code"] == "not_ready"

        cancelled = await client.post(f"/v1/music/{ids[0]}/cancel")
        assert cancelled.status_code == 200
        body = cancelled.json()
        assert body["status"] == "cancelled" and body["refunded"] == body["cost"]
        again = await client.post(f"/v1/music/{ids[0]}/cancel")
        assert again.status_code == 409 and again.json()["error"]["code"] == "not_cancellable"

        spent = sum([(await client.get(f"/v1/music/{i}")).json()["cost"] for i in ids[1:]])
        assert (await client.get("/v1/balance")).json()["balance"] == start - spent

        first = (await client.get("/v1/music", params={"limit": 2})).json()
        assert [t["id"] for t in first["items"]] == [ids[2], ids[1]]
        rest = (await client.get("/v1/music", params={"limit": 2,
                                                      "cursor": first["next_cursor"]})).json()
        assert [t["id"] for t in rest["items"]] == [ids[0]] and rest["next_cursor"] is None
