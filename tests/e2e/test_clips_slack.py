"""End-to-end audio prompts on Slack: message shortcuts → modal → download → queue.

The real slack-bolt app over Socket Mode against the fake Slack, which hosts the member's
file (bot token required), records ``views.open`` and sends the shortcut and
``view_submission`` payloads as Slack does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from pydub import AudioSegment

from bot.core.models import JobState
from bot.platforms.slack_clips import CONTINUE, MELODY
from tests.core import clip_files
from tests.e2e.slack_fixtures import (
    CHANNEL,
    MEMBER,
    STARTING_BALANCE,
    RunningBot,
    SlackWorld,
    open_world,
    running_app,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningBot]:
    async with running_app(tmp_path_factory.mktemp("slack-clips")) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def world(bot: RunningBot) -> AsyncIterator[SlackWorld]:
    async with open_world(bot, "socket") as opened:
        yield opened


async def shortcut_and_submit(world: SlackWorld, callback_id: str, file: dict,
                              **values: str) -> None:
    """The member picks the shortcut on a message with ``file``, fills the modal, submits."""
    fake = world.fake
    opened = len(fake.opened_views)
    payload = fake.message_shortcut(callback_id, user=MEMBER, channel=CHANNEL, files=[file])
    assert (await fake.send_socket("interactive", payload)).status == 200
    view = (await fake.wait_for(lambda: fake.opened_views[opened:]))[0]
    assert view["trigger_id"] == payload["trigger_id"]
    submission = fake.view_submission(view, user=MEMBER, values=values)
    assert (await fake.send_socket("interactive", submission)).status == 200


async def test_continue_this_clip_queues_the_clip_and_new_music(
    world: SlackWorld, tmp_path: Path,
) -> None:
    riff = clip_files.sine(tmp_path / "riff.mp3", 1.0)
    file = world.fake.host_file("riff.mp3", riff.read_bytes())
    await shortcut_and_submit(world, CONTINUE, file, prompt="keep the groove", duration="2")
    job = (await world.fake.wait_for(lambda: world.fake.shared_files))[0]
    assert job.channel == CHANNEL
    path = tmp_path / "out.mp3"
    path.write_bytes(job.data)
    assert AudioSegment.from_file(path).duration_seconds == pytest.approx(3.0, abs=0.3)
    assert world.fake.file_downloads[file["id"]] == 1
    posted = [str(c.get("text", "")) for c in world.fake.calls_to("chat.postMessage")]
    assert any("Continues your clip" in text for text in posted)  # the first status text
    assert await world.balance() == STARTING_BALANCE - 10


@pytest.mark.parametrize("kind, words", [
    ("not audio", "not an audio file"),
    ("too big", "clips can be at most"),
    ("corrupt", "damaged"),
])
async def test_bad_files_are_refused_privately_and_charge_nothing(
    world: SlackWorld, tmp_path: Path, kind: str, words: str,
) -> None:
    good = clip_files.sine(tmp_path / "good.mp3", 2.0)
    data = {"not audio": lambda: clip_files.text(tmp_path / "a.mp3").read_bytes(),
            "too big": good.read_bytes,
            "corrupt": lambda: clip_files.corrupt(tmp_path / "b.mp3", good).read_bytes()}[kind]()
    size = 50 * 1024 * 1024 if kind == "too big" else None
    file = world.fake.host_file("clip.mp3", data, size=size)
    await shortcut_and_submit(world, CONTINUE, file, prompt="more", duration="2")
    await world.wait_private(words)
    assert world.fake.file_downloads.get(file["id"], 0) == (0 if kind == "too big" else 1)
    assert await world.balance() == STARTING_BALANCE
    assert await world.jobs() == []


async def test_a_message_without_audio_gets_a_hint_and_no_modal(world: SlackWorld) -> None:
    picture = world.fake.host_file("cat.png", b"\x89PNG...", mimetype="image/png")
    payload = world.fake.message_shortcut(CONTINUE, user=MEMBER, channel=CHANNEL,
                                          files=[picture])
    await world.fake.send_socket("interactive", payload)
    await world.wait_private("has no audio file")
    assert world.fake.opened_views == []


async def test_follow_this_melody_on_a_model_without_chroma_is_refused(
    world: SlackWorld, tmp_path: Path,
) -> None:
    hum = clip_files.sine(tmp_path / "hum.mp3", 1.0)
    file = world.fake.host_file("hum.mp3", hum.read_bytes())
    await shortcut_and_submit(world, MELODY, file, prompt="hum", duration="2", model="debug")
    await world.wait_private("cannot follow a melody")
    assert await world.balance() == STARTING_BALANCE
    assert not [j for j in await world.jobs() if j.state is not JobState.CANCELLED]
