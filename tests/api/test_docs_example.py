"""docs/api.md's curl and Python examples, run as written against the real server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api.conftest import OLGA, World
from tests.api.test_flow import ffprobe

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


@pytest.mark.slow
async def test_the_python_example_in_the_docs_works(world: World, tmp_path: Path) -> None:
    [code] = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    key = await world.key_for(OLGA)
    env = {**os.environ, "MUSICBOT_URL": world.url, "MUSICBOT_KEY": key}
    # its own process: the example blocks, the server runs in this test's event loop
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], cwd=tmp_path,
                                   env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    track_id, duration, balance = done.stdout.split()
    assert float(duration) == 1.0 and int(balance) == await world.balance(OLGA)
    assert (tmp_path / f"track-{track_id}.mp3").stat().st_size > 1000


@pytest.mark.slow
async def test_the_curl_example_in_the_docs_works(world: World, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed here (apt-get install curl)")
    [script] = re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)
    # The reader's own URL and key replace the placeholders of the first line.
    script = re.sub(r"(?m)^export MUSICBOT_URL=.*$", "", script)
    key = await world.key_for(OLGA)
    before = await world.balance(OLGA)
    env = {**os.environ, "MUSICBOT_URL": world.url, "MUSICBOT_KEY": key}
    done = await asyncio.to_thread(subprocess.run, ["sh", "-e", "-c", script], cwd=tmp_path,
                                   env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    accepted, balance = (json.loads(line) for line in done.stdout.splitlines()
                         if line.startswith("{"))
    assert accepted["id"] == 1 and accepted["status"] == "pending"
    assert balance["balance"] == before - accepted["price"] == await world.balance(OLGA)
    assert ffprobe((tmp_path / "track.mp3").read_bytes(), tmp_path)["format"]["duration"]
    assert json.loads((tmp_path / "waveform.json").read_text())["peaks"]
