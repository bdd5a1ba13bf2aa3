"""The API draws every line where ``/music`` does: for each row of the limits table (and the
config-driven duration and prompt limits), values at and just past each bound are sent to the
real server and to the core's validation; 202 exactly when the core accepts."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from bot.config import RateLimit
from bot.core import limits as table
from tests.api.conftest import OLGA, World, api_config, open_world
from tests.bad_input.test_limits_parity import NUMBER_CASES, core_accepts

API_NAME = {"format": "output_format"}
NOT_IN_THE_API: set[str] = set()
"""Chat-only options (none: every row of the limits table is a field of the generate body)."""


def cases(world: World) -> list[dict[str, Any]]:
    config = world.app.config
    low, high = table.duration_range(config, config.models.default)
    bodies: list[dict[str, Any]] = [{field: value} for field, value in NUMBER_CASES
                                    if field not in NOT_IN_THE_API]
    bodies += [{"duration": round(bound + offset, 1)} for bound in (low, high)
               for offset in (0, 0.1, -0.1)]
    bodies += [{"genre": "a" * table.GENRE.max_chars}, {"genre": "a" * (table.GENRE.max_chars + 1)},
               {"prompt": "a" * table.prompt_chars(config)},
               {"prompt": "a" * (table.prompt_chars(config) + 1)},
               {"prompt": "a  " * (table.prompt_chars(config) // 2)},  # spaces collapse
               *({"format": f} for f in (*table.FORMAT_CHOICES, "mp4"))]
    return bodies


@pytest.mark.slow
async def test_the_api_accepts_exactly_what_the_core_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = api_config(tmp_path, max_queued_per_user=1000,
                        rate_limit=RateLimit(count=1000, window_s=60))
    config = dataclasses.replace(config, economy=dataclasses.replace(
        config.economy, starting_balance=1_000_000))
    world = await open_world(config, monkeypatch, worker=False)
    try:
        key = await world.key_for(OLGA)
        async with world.client(key) as client:
            for fields in cases(world):
                core = core_accepts(config, **fields)
                body = {"prompt": "drums", "duration": 5,
                        **{API_NAME.get(k, k): v for k, v in fields.items()}}
                response = await client.post("/v1/music/generate", json=body)
                assert response.status_code == (202 if core else 422), (fields, response.text)
    finally:
        await world.app.stop()
