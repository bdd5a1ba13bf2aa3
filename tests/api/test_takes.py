"""Several takes of one prompt in one API request, as ``/music takes:3`` does in chat:
charged together (a line each), every take a track of its own, a retry charged once, a
bad count refused with nothing charged, and a cancel that stops the unfinished takes."""

from __future__ import annotations

import pytest

from bot.core import limits as table
from tests.api.conftest import OLGA, World
from tests.api.test_flow import wait_until

pytestmark = pytest.mark.slow


async def test_three_takes_charged_once_each_delivered_as_three_tracks(world: World) -> None:
    key = await world.key_for(OLGA)
    async with world.client(key, **{"Idempotency-Key": "jam-takes-1"}) as client:
        before = await world.balance(OLGA)
        one = (await client.get("/v1/price", params={"duration": 1})).json()["price"]
        body = {"prompt": "warm synth pad", "duration": 1, "seed": 40, "takes": 3}
        accepted = await client.post("/v1/music/generate", json=body)
        assert accepted.status_code == 202, accepted.text
        receipt = accepted.json()
        ids = [take["id"] for take in receipt["takes"]]
        assert len(ids) == 3 and receipt["id"] == ids[0]
        assert receipt["price"] == 3 * one and receipt["balance_after"] == before - 3 * one

        again = await client.post("/v1/music/generate", json=body)  # a retried POST
        assert again.status_code == 202 and again.json()["duplicate"] is True
        assert [take["id"] for take in again.json()["takes"]] == ids
        assert await world.balance(OLGA) == before - 3 * one  # charged once

        tracks = [await wait_until(client, track_id, "completed", "failed") for track_id in ids]
        assert [t["status"] for t in tracks] == ["completed"] * 3
        assert [t["seed"] for t in tracks] == [40, 41, 42]  # consecutive seeds
        listed = {t["id"] for t in (await client.get("/v1/music")).json()["items"]}
        assert set(ids) <= listed


async def test_too_many_takes_is_refused_with_the_limit_and_charges_nothing(
    idle_world: World,
) -> None:
    key = await idle_world.key_for(OLGA)
    ledger = await idle_world.ledger_rows()
    async with idle_world.client(key) as client:
        refused = await client.post("/v1/music/generate", json={
            "prompt": "drums", "duration": 1, "takes": table.TAKES.high + 1})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["field"] == "takes" and str(table.TAKES.high) in error["message"]
    assert await idle_world.ledger_rows() == ledger


async def test_a_retry_asking_for_other_takes_is_a_conflict(idle_world: World) -> None:
    key = await idle_world.key_for(OLGA)
    async with idle_world.client(key, **{"Idempotency-Key": "jam-takes-2"}) as client:
        body = {"prompt": "drums", "duration": 1, "takes": 2}
        assert (await client.post("/v1/music/generate", json=body)).status_code == 202
        ledger = await idle_world.ledger_rows()
        other = await client.post("/v1/music/generate", json={**body, "takes": 3})
    assert other.status_code == 409, other.text
    assert await idle_world.ledger_rows() == ledger


async def test_cancelling_a_takes_request_refunds_every_unfinished_take(
    idle_world: World,
) -> None:
    key = await idle_world.key_for(OLGA)
    before = await idle_world.balance(OLGA)
    async with idle_world.client(key) as client:
        receipt = (await client.post("/v1/music/generate", json={
            "prompt": "drums", "duration": 1, "takes": 3})).json()
        cancelled = await client.post(f"/v1/music/{receipt['takes'][1]['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        states = [(await client.get(f"/v1/music/{take['id']}")).json()["status"]
                  for take in receipt["takes"]]
    assert states == ["cancelled"] * 3
    assert await idle_world.balance(OLGA) == before  # every take refunded, once
