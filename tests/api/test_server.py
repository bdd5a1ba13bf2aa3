"""The server as an operator and a client meet it: OpenAPI and docs pages, and
``musicbot api`` running alone in its own process until SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import World

REPO = Path(__file__).resolve().parents[2]


async def test_openapi_shows_the_limits_and_docs_are_served(idle_world: World) -> None:
    async with idle_world.client() as client:
        schema = (await client.get("/openapi.json")).json()
        assert (await client.get("/docs")).status_code == 200
        unknown = await client.get("/v1/nothing-here")
    body = schema["components"]["schemas"]["GenerateRequest"]["properties"]
    assert body["duration"]["maximum"] == 8 and body["duration"]["minimum"] == 1
    assert body["prompt"]["maxLength"] == idle_world.app.config.limits.max_prompt_chars
    assert {"/v1/music/generate", "/v1/music/{track_id}/download", "/v1/admin/ledger"} <= set(
        schema["paths"])
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    # Swagger's "Authorize" button: both ways to send a key, on every /v1 operation only
    assert set(schema["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyHeader"}
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            expected = [{"HTTPBearer": []}, {"APIKeyHeader": []}] if path.startswith(
                "/v1/") else None
            assert operation.get("security") == expected, path


@pytest.mark.slow
def test_musicbot_api_serves_alone_and_stops_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "musicbot.yaml").write_text(
        "models: {default: debug}\ngeneration: {device: cpu}\n"
        "api: {host: 127.0.0.1, port: 0}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for secret in ("DISCORD_TOKEN", "SLACK_BOT_TOKEN"):
        env.pop(secret, None)
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "--config",
                             str(tmp_path / "musicbot.yaml"), "api"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = _listening_port(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:  # 503 until the model is loaded, then the key check answers
            answer = httpx.post(f"{url}/v1/music/generate", json={"prompt": "x", "duration": 1},
                                headers={"Authorization": "Bearer mb_0_x"})
            if answer.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert answer.status_code == 401, answer.text
    finally:
        proc.send_signal(signal.SIGTERM)
        _, errors = proc.communicate(timeout=60)
    assert proc.returncode == 0, errors


def _listening_port(proc: subprocess.Popen[str]) -> int:
    assert proc.stderr is not None
    for line in proc.stderr:
        found = re.search(r"HTTP API listening on http://127\.0\.0\.1:(\d+)", line)
        if found:
            return int(found.group(1))
    raise AssertionError(f"the API never said where it listens (exit {proc.wait()})")
