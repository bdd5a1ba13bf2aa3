"""docs/api.md's Python example, run as written against the real server."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api.conftest import OLGA, World

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
