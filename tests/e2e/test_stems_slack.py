"""Stems end to end on Slack: the Stems button and ``/music stems N`` through real
slack-bolt against the fake, with the real App, worker and a random-initialised HTDemucs
(the stems are NOISE; the tests check the zip, the price and the charge)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from bot.core.models import JobKind, JobState
from tests.e2e.slack_fixtures import CHANNEL, RunningBot, SlackWorld, running_app
from tests.e2e.slack_fixtures import open_world as open_slack
from tests.e2e.test_stems import STEMS, STEMS_OF_2S, job_id_of, stems_in

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningBot]:
    async with running_app(tmp_path_factory.mktemp("slack-stems")) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def slack(bot: RunningBot) -> AsyncIterator[SlackWorld]:
    async with open_slack(bot, "socket") as opened:
        yield opened


async def slack_track(world: SlackWorld) -> tuple[int, object]:
    await world.command("drum and bass --duration 2")
    status = (await world.fake.wait_for(lambda: world.fake.messages_in(CHANNEL)))[-1]
    job = job_id_of(status.text)
    await world.wait_job(job)
    shared = await world.fake.wait_for(lambda: world.fake.shared_files)
    return job, shared[-1]


async def test_slack_stems_button_uploads_the_zip(slack: SlackWorld) -> None:
    world = slack
    job, shared = await slack_track(world)
    stems_button = shared.blocks[1]["elements"][2]
    assert stems_button["text"]["text"] == f"🎚️ Stems · {STEMS_OF_2S} tokens"
    before = await world.balance()

    await world.click(stems_button["action_id"])

    uploaded = (await world.fake.wait_for(
        lambda: [f for f in world.fake.shared_files if f.filename.endswith(".zip")], 120))[0]
    stems_job = (await world.jobs())[-1]
    assert stems_job.kind == JobKind.STEMS and stems_job.source_job_id == job
    assert (await world.wait_job(stems_job.id)).state is JobState.DONE
    assert stems_in(uploaded.data) == sorted(STEMS)
    assert f"stems of #{job}" in uploaded.blocks[0]["text"]["text"]
    assert await world.balance() == before - STEMS_OF_2S


async def test_slack_stems_command_refuses_a_missing_job_without_charging(
    slack: SlackWorld,
) -> None:
    world = slack
    before = await world.balance()
    await world.command("stems 99999")
    assert "#99999" in await world.wait_private("not found")
    assert await world.balance() == before
