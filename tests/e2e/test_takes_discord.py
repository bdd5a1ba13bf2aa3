"""Takes and batches through the real discord.py client, App, worker and debug model.

A member asks for several takes of one prompt (or several prompts at once); the tests check
what they see: one receipt, one message bringing every track with its own Re-roll / Extend
row, a failed take named and refunded alone, and balances and ledger lines that add up.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.core.models import Job, JobState
from tests.e2e.discord_fixtures import STARTING_BALANCE, DiscordWorld, open_world
from tests.fakes.discord_fake import FakeMessage

PRICE_2S = 10  # 2 s at 2 tokens/s, raised to the 10-token minimum


@pytest.fixture
async def world(tmp_path, monkeypatch) -> AsyncIterator[DiscordWorld]:
    async with open_world(tmp_path, monkeypatch) as w:
        yield w


def job_ids(message: FakeMessage) -> list[int]:
    return [int(n) for n in re.findall(r"Job #(\d+) ·", message.content)]


async def done(world: DiscordWorld, job_id: int) -> Job:
    """The job once the delivery stage committed it (just after the platform took it)."""
    for _ in range(600):
        job = await world.service.get_job(job_id)
        if job.state.terminal:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} is still {job.state.value}")


async def group_result(world: DiscordWorld, timeout: float = 180) -> FakeMessage:
    return await world.fake.wait_message(
        lambda m: "tracks for" in m.content and bool(m.uploads), timeout)


async def test_takes_arrive_together_each_with_its_own_buttons(world: DiscordWorld):
    it = await world.music("calm piano", 2.0, seed=7, takes=3)

    status = await it.wait_message(lambda m: "queued together" in m.content)
    jobs = job_ids(status)
    assert len(jobs) == 3 and f"Charged **{3 * PRICE_2S}** tokens in all" in status.content
    private = await it.wait_message(lambda m: "balance" in m.content)
    assert f"your balance is now **{STARTING_BALANCE - 3 * PRICE_2S}**" in private.content

    result = await group_result(world)
    assert "3 of 3 tracks" in result.content
    # consecutive seeds after the given one, so any take can be made again alone
    for seed in (7, 8, 9):
        assert f"seed {seed}" in result.content
    assert sorted(u.filename for u in result.uploads) == [f"musicbot-{j}.mp3" for j in jobs]
    assert result.custom_ids == [f"musicbot:{verb}:{j}" for j in jobs
                                 for verb in ("reroll", "extend")]
    # tempo, key and loudness are measured on every track (noise here: labelled estimated)
    assert result.content.count("LUFS") == 3 and "BPM (estimated)" in result.content
    # one claim took them into one batch: they started together
    made = [await done(world, j) for j in jobs]
    assert len({job.started_at for job in made}) == 1
    assert all(job.state is JobState.DONE and job.delivered_at for job in made)
    assert await world.say("balance") == (
        f"Your balance: **{STARTING_BALANCE - 3 * PRICE_2S}** tokens.")

    # a take's own Re-roll re-makes that one prompt, charged as one track
    reroll = await world.fake.click(result, f"musicbot:reroll:{jobs[1]}", user=world.bob,
                                    guild=world.studio)
    receipt = await reroll.wait_message(lambda m: "queued" in m.content)
    assert f"Charged **{PRICE_2S}** tokens" in receipt.content


async def test_a_failing_take_is_refunded_alone(world: DiscordWorld):
    # The second take's file cannot be written (a directory stands where it goes): the real
    # worker fails that job after rendering it, and only that job.
    tracks = Path(world.config.data_dir) / "tracks"
    (tracks / "2.mp3").mkdir(parents=True)
    it = await world.music("night drive", 2.0, seed=40, takes=3)
    status = await it.wait_message(lambda m: "queued together" in m.content)
    assert job_ids(status) == [1, 2, 3]

    result = await group_result(world)
    assert "2 of 3 tracks" in result.content
    assert (f"❌ Job #2 (seed 41) failed: the audio could not be encoded. Refunded "
            f"**{PRICE_2S}** tokens.") in result.content
    assert sorted(u.filename for u in result.uploads) == ["musicbot-1.mp3", "musicbot-3.mp3"]
    assert result.custom_ids == ["musicbot:reroll:1", "musicbot:extend:1",
                                 "musicbot:reroll:3", "musicbot:extend:3"]
    assert await world.say("balance") == (
        f"Your balance: **{STARTING_BALANCE - 2 * PRICE_2S}** tokens.")
    ledger = await world.say("tokens ledger", {"member": world.bob}, user=world.olga)
    lines = ledger.splitlines()
    assert sum("charge -10" in line for line in lines) == 3
    refunds = [line for line in lines if "refund" in line]
    assert len(refunds) == 1 and "job #2" in refunds[0]


async def test_cancel_stops_every_take_of_the_group(world: DiscordWorld):
    await world.app.worker.stop()  # the queue is busy: the takes wait
    it = await world.music("slow jazz", 2.0, takes=2)
    status = await it.wait_message(lambda m: "queued together" in m.content)
    first, second = job_ids(status)
    assert status.custom_ids == [f"musicbot:cancel:{first}"]

    click = await world.fake.click(status, f"musicbot:cancel:{first}", user=world.bob,
                                   guild=world.studio)
    answer = await click.wait_message()
    assert answer.ephemeral and f"Refunded **{2 * PRICE_2S}**" in answer.content
    for job_id in (first, second):
        assert (await world.service.get_job(job_id)).state is JobState.CANCELLED
    assert await world.say("balance") == f"Your balance: **{STARTING_BALANCE}** tokens."


async def test_batch_charges_every_prompt_and_delivers_them_together(world: DiscordWorld):
    it = await world.fake.slash("batch", {"prompts": "calm piano | fast drums", "duration": 2.0},
                                user=world.bob, guild=world.studio)
    status = await it.wait_message(lambda m: "queued together" in m.content)
    assert "**calm piano**" in status.content and "**fast drums**" in status.content
    assert f"Charged **{2 * PRICE_2S}** tokens in all" in status.content

    result = await group_result(world)
    assert "2 of 2 tracks" in result.content and len(result.uploads) == 2
    assert "**calm piano**" in result.content and "**fast drums**" in result.content


async def test_bad_batches_are_refused_privately_and_charge_nothing(world: DiscordWorld):
    most = world.config.limits.max_batch_prompts
    too_many = " | ".join(f"prompt {n}" for n in range(most + 1))
    it = await world.fake.slash("batch", {"prompts": too_many, "duration": 2.0},
                                user=world.bob, guild=world.studio)
    answer = await it.wait_message(lambda m: m.ephemeral)
    assert f"at most {most} prompts per batch" in answer.content

    it = await world.fake.slash("batch", {"prompts": "fine | " + "x" * 500, "duration": 2.0},
                                user=world.bob, guild=world.studio)
    answer = await it.wait_message(lambda m: m.ephemeral)
    assert "Invalid prompt 2" in answer.content

    # the balance covers one take, not three: nothing at all is charged
    await world.say("tokens set", {"member": world.bob, "amount": 15}, user=world.olga)
    it = await world.music("calm piano", 2.0, takes=3)
    answer = await it.wait_message(lambda m: m.ephemeral)
    assert "this costs 30 and your balance is 15" in answer.content
    assert await world.say("balance") == "Your balance: **15** tokens."
    assert await world.say("history") == "No tracks yet. Try `/music`."
