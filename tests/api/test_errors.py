"""Every refusal a client can meet: its status, its stable code, a message for people — and
nothing written to the ledger. Also: retries charged once, and keys kept to their member."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from bot.core.models import Actor
from tests.api.conftest import ADMIN, BOB, BOB_ELSEWHERE, OLGA, World, api_config, open_world

GOOD = {"prompt": "drums", "duration": 1}


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code and body["message"], body
    return dict(body)


async def test_missing_bad_and_revoked_keys_are_401(idle_world: World) -> None:
    world = idle_world
    ledger = await world.ledger_rows()
    key = await world.key_for(OLGA)
    async with world.client() as anonymous:
        error(await anonymous.post("/v1/music/generate", json=GOOD), 401, "missing_api_key")
    for wrong in ("mb_nothing_here", key[:-2] + "xx", "Bearer", key.replace("mb_", "sk_")):
        async with world.client(wrong) as client:
            response = await client.get("/v1/balance")
            error(response, 401, "invalid_api_key")
            assert response.headers["www-authenticate"] == "Bearer"
    async with world.client(None, **{"X-API-Key": key}) as client:
        assert (await client.get("/v1/balance")).status_code == 200
    # another Authorization scheme (a proxy's Basic auth) leaves the X-API-Key header to count
    async with world.client(None, Authorization="Basic dXNlcjpwdw==", **{"X-API-Key": key}) \
            as client:
        assert (await client.get("/v1/balance")).status_code == 200
    async with world.client(None, Authorization=f"bearer   {key}") as client:
        assert (await client.get("/v1/balance")).status_code == 200
    result = await world.console.execute("/apikey list")  # the operator's own: none
    assert "No API keys" in result.text
    await world.service.apikeys.revoke(OLGA, member=OLGA.user)
    async with world.client(key) as client:
        error(await client.post("/v1/music/generate", json=GOOD), 401, "invalid_api_key")
    assert await world.ledger_rows() == ledger


@pytest.mark.parametrize(("body", "field"), [
    ({"prompt": "drums", "duration": 999}, "duration"),
    ({"prompt": "drums", "duration": 0.5}, "duration"),
    ({"prompt": "drums"}, "duration"),
    ({"prompt": "  ", "duration": 1}, "prompt"),
    ({"prompt": "x" * 401, "duration": 1}, "prompt"),
    ({"prompt": "drums", "duration": 1, "tempo": 301}, "tempo"),
    ({"prompt": "drums", "duration": 1, "temperature": True}, "temperature"),
    ({"prompt": "drums", "duration": 1, "output_format": "aac"}, "output_format"),
    ({"prompt": "drums", "duration": 1, "model": "nope"}, "model"),
    ({"prompt": "drums", "duration": 1, "loudness": 3}, "loudness"),
    ({"prompt": "drums", "duration": 1, "webhook_url": "ftp://x"}, "webhook_url"),
])
async def test_bad_input_is_422_naming_the_field_and_charges_nothing(
    idle_world: World, body: dict[str, Any], field: str
) -> None:
    key = await idle_world.key_for(OLGA)
    ledger = await idle_world.ledger_rows()
    async with idle_world.client(key) as client:
        found = error(await client.post("/v1/music/generate", json=body), 422,
                      "invalid_request")
    assert found["field"] == field
    assert await idle_world.ledger_rows() == ledger


async def test_not_enough_tokens_is_402_with_balance_and_price(idle_world: World) -> None:
    key = await idle_world.key_for(OLGA)
    async with idle_world.client(key) as client:
        await client.get("/v1/balance")
        await idle_world.service.set_balance(ADMIN, OLGA.user, 3)
        ledger = await idle_world.ledger_rows()
        found = error(await client.post("/v1/music/generate", json=GOOD), 402,
                      "insufficient_tokens")
    assert found["balance"] == 3 and found["price"] > 3
    assert await idle_world.ledger_rows() == ledger


async def test_rate_limit_is_429_with_retry_after(tmp_path: Any, monkeypatch: Any) -> None:
    world = await open_world(api_config(tmp_path, max_queued_per_user=2), monkeypatch,
                             worker=False)
    try:
        key = await world.key_for(OLGA)
        async with world.client(key) as client:
            for _ in range(2):
                assert (await client.post("/v1/music/generate", json=GOOD)).status_code == 202
            ledger = await world.ledger_rows()
            response = await client.post("/v1/music/generate", json=GOOD)
            found = error(response, 429, "rate_limited")
            assert found["limit"] == "max_queued_per_user"
            assert int(response.headers["retry-after"]) >= 1
            assert await world.ledger_rows() == ledger
    finally:
        await world.app.stop()


async def test_per_key_request_budget_is_429(idle_world: World) -> None:
    key = await idle_world.key_for(OLGA)
    async with idle_world.client(key) as client:
        answers = await asyncio.gather(*(client.get("/v1/balance") for _ in range(80)))
    limited = [r for r in answers if r.status_code == 429]
    assert limited and all(r.headers["retry-after"] for r in limited)
    assert limited[0].json()["error"]["limit"] == "requests_per_key"


async def test_generating_is_503_until_the_model_is_ready(idle_world: World) -> None:
    key = await idle_world.key_for(OLGA)
    idle_world.api.context.ready = False  # what the app shows while it loads the models
    ledger = await idle_world.ledger_rows()
    async with idle_world.client(key) as client:
        response = await client.post("/v1/music/generate", json=GOOD)
        error(response, 503, "model_loading")
        assert response.headers["retry-after"] == "5"
        assert (await client.get("/v1/balance")).status_code == 200  # reads still work
    assert await idle_world.ledger_rows() == ledger


async def test_a_key_never_reaches_another_members_track_or_community(
    idle_world: World,
) -> None:
    world = idle_world
    olga, bob, bob_away = [await world.key_for(a) for a in (OLGA, BOB, BOB_ELSEWHERE)]
    async with world.client(olga) as client:
        track = (await client.post("/v1/music/generate", json=GOOD)).json()["id"]
    ledger = await world.ledger_rows()
    for key in (bob, bob_away):
        async with world.client(key) as client:
            for path in ("", "/audio", "/download", "/waveform", "/waveform.png"):
                error(await client.get(f"/v1/music/{track}{path}"), 404, "track_not_found")
            for verb in ("cancel", "reroll", "extend"):
                error(await client.post(f"/v1/music/{track}/{verb}"), 404, "track_not_found")
            assert (await client.get("/v1/music")).json()["items"] == []
            error(await client.get("/v1/music/99999"), 404, "track_not_found")
    assert await world.ledger_rows() == ledger
    await world.service.grant(ADMIN, BOB.user, 50)
    async with world.client(bob) as here, world.client(bob_away) as there:
        assert (await here.get("/v1/balance")).json()["balance"] == 150
        assert (await there.get("/v1/balance")).json()["balance"] == 100


async def test_admin_routes_need_an_admin_key(idle_world: World) -> None:
    world = idle_world
    member, admin = await world.key_for(OLGA), await world.key_for(ADMIN)
    ledger = await world.ledger_rows()
    async with world.client(member) as client:
        error(await client.post("/v1/admin/grant", json={"member": BOB.user, "amount": 5}),
              403, "forbidden")
        error(await client.get("/v1/admin/ledger"), 403, "forbidden")
    assert await world.ledger_rows() == ledger
    async with world.client(admin) as client:
        granted = await client.post("/v1/admin/grant", json={"member": BOB.user, "amount": 5,
                                                             "reason": "jam"})
        assert granted.json() == {"member": BOB.user, "balance": 105}
        error(await client.post("/v1/admin/take", json={"member": BOB.user, "amount": 500}),
              422, "invalid_request")
        assert (await client.post("/v1/admin/set", json={"member": BOB.user, "amount": 7})
                ).json()["balance"] == 7
        lines = (await client.get("/v1/admin/ledger", params={"member": BOB.user})).json()
    assert [line["kind"] for line in lines["entries"]][:2] == ["set", "grant"]
    # an admin key acts in its own community only
    async with world.client(await world.key_for(Actor("discord", "other", "999",
                                                      is_admin=True))) as client:
        await client.post("/v1/admin/grant", json={"member": BOB.user, "amount": 1})
    assert await world.balance(BOB) == 7


async def test_idempotent_retry_is_charged_once(idle_world: World) -> None:
    key = await idle_world.key_for(OLGA)
    async with idle_world.client(key, **{"Idempotency-Key": "build-42"}) as client:
        first, second = await asyncio.gather(
            client.post("/v1/music/generate", json=GOOD),
            client.post("/v1/music/generate", json=GOOD))
        third = await client.post("/v1/music/generate", json=GOOD)
        ids = {r.json()["id"] for r in (first, second, third)}
        assert len(ids) == 1 and all(r.status_code == 202 for r in (first, second, third))
        assert sorted(r.json()["duplicate"] for r in (first, second, third)) == [
            False, True, True]
        ledger = await idle_world.ledger_rows()
        error(await client.post("/v1/music/generate", json={**GOOD, "prompt": "bass"}), 409,
              "idempotency_conflict")
        assert await idle_world.ledger_rows() == ledger
    charges = [r for r in ledger if r[4] == "charge"]
    assert len(charges) == 1
    other = await idle_world.key_for(BOB)  # the same header on another key is another job
    async with idle_world.client(other, **{"Idempotency-Key": "build-42"}) as client:
        assert (await client.post("/v1/music/generate", json=GOOD)).json()["id"] not in ids


async def test_a_keys_use_is_recorded_after_the_answer_not_before_it(
    idle_world: World, monkeypatch: Any
) -> None:
    monkeypatch.setattr("bot.core.apikeys.LAST_USED_FLUSH_S", 0.05)
    key = await idle_world.key_for(OLGA)
    async with idle_world.client(key) as http:
        assert (await http.get("/v1/balance")).status_code == 200
    [before] = await idle_world.service.apikeys.list_keys(OLGA)
    assert before.last_used_at is None  # the request did not wait for a write
    await asyncio.sleep(0.3)
    [after] = await idle_world.service.apikeys.list_keys(OLGA)
    assert after.last_used_at is not None
