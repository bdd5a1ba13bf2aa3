"""Takes and batches through real slack-bolt and slack_sdk, the real core, worker and debug
model, against the fake Slack: one status message, one upload with every track and a row of
Re-roll / Extend per track, and refusals that charge nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from bot.core.models import JobState
from tests.e2e.slack_fixtures import (
    CHANNEL,
    STARTING_BALANCE,
    RunningBot,
    SlackWorld,
    open_world,
    running_app,
)

PRICE_1S = 10  # default pricing: max(10, 2 tokens per second)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningBot]:
    async with running_app(tmp_path_factory.mktemp("slack-takes")) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def world(bot: RunningBot) -> AsyncIterator[SlackWorld]:
    async with open_world(bot, "socket") as opened:
        yield opened


def button_ids(blocks: list[dict] | None) -> list[str]:
    return [e["action_id"] for b in blocks or [] if b["type"] == "actions" for e in b["elements"]]


async def test_takes_are_uploaded_in_one_message_with_buttons_per_take(
    world: SlackWorld,
) -> None:
    await world.command("calm piano --duration 1 --seed 3 --takes 2")
    status = (await world.fake.wait_for(lambda: world.fake.messages_in(CHANNEL)))[0]
    assert "2 jobs queued together" in status.text
    assert f"Charged *{2 * PRICE_1S}* tokens in all" in status.text
    await world.wait_private("your balance is now")

    shared = await world.fake.wait_for(lambda: world.fake.shared_files[1:] and
                                       world.fake.shared_files)
    jobs = await world.jobs()
    ids = [job.id for job in jobs]
    assert sorted(f.filename for f in shared) == sorted(f"musicbot-{i}.mp3" for i in ids)
    blocks = shared[0].blocks  # one message: every file carries the same blocks
    assert all(f.blocks == blocks for f in shared)
    assert button_ids(blocks) == [f"musicbot_{verb}:{i}" for i in ids
                                  for verb in ("reroll", "extend")]
    text = blocks[0]["text"]["text"]
    assert "2 of 2 tracks" in text and "seed 3" in text and "seed 4" in text
    assert text.count("LUFS") == 2
    for job in jobs:
        assert (await world.wait_job(job.id)).state is JobState.DONE
    assert await world.balance() == STARTING_BALANCE - 2 * PRICE_1S


async def test_batch_takes_one_prompt_per_line(world: SlackWorld) -> None:
    await world.command("batch --duration 1\nrainy lo-fi\nfast techno")
    status = (await world.fake.wait_for(lambda: world.fake.messages_in(CHANNEL)))[0]
    assert "*rainy lo-fi*" in status.text and "*fast techno*" in status.text
    shared = await world.fake.wait_for(lambda: world.fake.shared_files[1:] and
                                       world.fake.shared_files)
    assert len(shared) == 2
    text = shared[0].blocks[0]["text"]["text"]
    assert "*rainy lo-fi*" in text and "*fast techno*" in text
    for job in await world.jobs():
        await world.wait_job(job.id)
    assert await world.balance() == STARTING_BALANCE - 2 * PRICE_1S


async def test_bad_counts_are_refused_and_charge_nothing(world: SlackWorld) -> None:
    most = world.app.config.limits.max_batch_prompts
    lines = "\n".join(f"prompt {n}" for n in range(most + 1))
    await world.command(f"batch --duration 1\n{lines}")
    assert f"at most {most} prompts per batch" in await world.wait_private("prompts")

    await world.command("drums --duration 1 --takes 5")
    assert "Invalid takes: must be between 1 and 4" in await world.wait_private("takes")

    await world.command("batch --duration 1 --seed 3\ndrums")
    assert "`batch` does not take `--seed`" in await world.wait_private("does not take")

    assert await world.balance() == STARTING_BALANCE
    assert await world.jobs() == []
    assert world.fake.messages_in(CHANNEL) == []
