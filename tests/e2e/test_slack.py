"""Slack end to end: real slack-bolt and slack_sdk, the real core and worker, a fake Slack.

Members type ``/music`` and click buttons through the fake (Socket Mode envelopes or signed
HTTP posts); the tests check what they would see in Slack and what happened to their tokens.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from pydub import AudioSegment

from bot.core.db import Database
from bot.core.errors import ConfigError
from bot.core.models import (
    AccountKey,
    Destination,
    EventKind,
    GenerationParams,
    Job,
    JobEvent,
    JobState,
    LedgerKind,
)
from bot.core.service import MusicService
from bot.platforms.slack_bot import SlackFrontend
from tests.e2e.slack_fixtures import (
    ADMIN,
    CHANNEL,
    MEMBER,
    OTHER,
    PRIVATE,
    STARTING_BALANCE,
    RunningBot,
    SlackWorld,
    make_config,
    open_world,
    running_app,
)
from tests.fakes.slack_fake import BOT_TOKEN, SIGNING_SECRET, FakeSlack, Message, SharedFile

PRICE_1S = 10  # default pricing: max(10, 2 tokens per second)

# one App (and one model load) for the module: every test runs on its event loop
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningBot]:
    async with running_app(tmp_path_factory.mktemp("slack-bot")) as running:
        yield running


@pytest.fixture
def mode() -> str:
    return "socket"


@pytest_asyncio.fixture(loop_scope="module")
async def world(bot: RunningBot, mode: str) -> AsyncIterator[SlackWorld]:
    async with open_world(bot, mode) as opened:
        yield opened


def job_id_of(message: Message) -> int:
    """The job number a status message shows ("Job #12 queued…")."""
    return int(message.text.split("Job #")[1].split(" ")[0])


async def status_message(world: SlackWorld, index: int = 0, channel: str = CHANNEL) -> Message:
    """The ``index``-th status message the bot posted in ``channel``."""
    found = await world.fake.wait_for(lambda: world.fake.messages_in(channel)[index:])
    return found[0]


async def make_track(world: SlackWorld, text: str) -> tuple[int, SharedFile]:
    """/music, then wait for the upload; returns the job id and the shared file."""
    before = len(world.fake.shared_files)
    ack = await world.command(text)
    assert ack.status == 200
    job_id = job_id_of(await status_message(world, len(world.fake.messages_in(CHANNEL)) - 1))
    await world.wait_job(job_id)
    shared = await world.fake.wait_for(lambda: world.fake.shared_files[before:])
    return job_id, shared[0]


def ffprobe(data: bytes, tmp_path: Path) -> dict:
    path = tmp_path / "uploaded.mp3"
    path.write_bytes(data)
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=format_name,duration",
         "-of", "json", str(path)], capture_output=True, check=True, text=True).stdout
    return json.loads(out)["format"]


def button_ids(blocks: list[dict] | None) -> list[str]:
    return [e["action_id"] for b in blocks or [] if b["type"] == "actions" for e in b["elements"]]


# ---------------------------------------------------------------------- happy path


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_music_is_charged_generated_and_uploaded_as_mp3(
    world: SlackWorld, tmp_path: Path
) -> None:
    started = time.monotonic()
    ack = await world.command("calm piano with rain --duration 1 --seed 7")
    assert ack.status == 200 and time.monotonic() - started < 3  # Slack's 3-second rule

    status = await status_message(world)
    job_id = job_id_of(status)
    assert f"Job #{job_id} queued" in status.text and "Charged *10* tokens" in status.text
    assert button_ids(status.blocks) == [f"musicbot_cancel:{job_id}"]

    job = await world.wait_job(job_id)
    assert job.state is JobState.DONE
    shared = (await world.fake.wait_for(lambda: world.fake.shared_files))[0]
    assert shared.channel == CHANNEL and shared.filename == f"musicbot-{job_id}.mp3"
    probe = ffprobe(shared.data, tmp_path)
    assert probe["format_name"] == "mp3"
    assert 0.5 < float(probe["duration"]) < 2.0
    text = shared.blocks[0]["text"]["text"]
    assert f"<@{MEMBER}>" in text and "*calm piano with rain*" in text and "seed 7" in text
    assert button_ids(shared.blocks) == [f"musicbot_reroll:{job_id}", f"musicbot_extend:{job_id}",
                                         f"musicbot_stems:{job_id}"]

    await world.fake.wait_for(lambda: "Done." in status.text)
    assert button_ids(status.blocks) == []  # no Cancel on a finished job
    assert await world.balance() == STARTING_BALANCE - PRICE_1S


async def test_slack_retry_of_the_same_command_charges_once(world: SlackWorld) -> None:
    payload = world.fake.slash_command("drum loop --duration 1", user=MEMBER, channel=CHANNEL)
    await world.fake.send_socket("slash_commands", payload)
    await world.fake.send_socket("slash_commands", dict(payload))  # Slack re-sends on timeout
    await world.wait_private("already requested")
    await world.wait_job(job_id_of(await status_message(world)))
    assert await world.balance() == STARTING_BALANCE - PRICE_1S
    assert len(world.fake.messages_in(CHANNEL)) == 1


# ---------------------------------------------------------------------- money


async def test_insufficient_tokens_charges_nothing(world: SlackWorld) -> None:
    await world.command(f"admin set <@{MEMBER}|ann> 5 testing", user=ADMIN)
    await world.wait_private("balance: *5* tokens", user=ADMIN)
    ledger_before = await world.ledger()

    await world.command("epic orchestra --duration 1")
    text = await world.wait_private("Not enough tokens")
    assert "costs 10" in text and "balance is 5" in text
    assert await world.balance() == 5
    assert await world.ledger() == ledger_before
    assert world.fake.messages_in(CHANNEL) == []
    assert await world.jobs() == []


async def test_undeliverable_track_is_kept_for_track_with_an_invite_hint(
    world: SlackWorld,
) -> None:
    # a private channel: when the upload says not_in_channel, joining cannot fix it
    world.fake.add_channel(PRIVATE, "secret", private=True)
    world.fake.fail("files.completeUploadExternal", "not_in_channel", times=None)

    await world.command("lullaby --duration 1", channel=PRIVATE)
    status = await status_message(world, channel=PRIVATE)
    job = await world.wait_job(job_id_of(status))
    assert job.state is JobState.DONE and job.delivered_at is None and job.refunded == 0
    assert await world.balance() == STARTING_BALANCE - PRICE_1S  # the track exists: no refund
    await world.fake.wait_for(lambda: f"/track {job.id}" in status.text)
    assert "/invite @musicbot" in status.text
    assert world.fake.shared_files == []
    assert [c["channel"] for c in world.fake.calls_to("conversations.join")] == [PRIVATE]
    kinds = [e.kind for e in await world.ledger(MEMBER)]
    assert kinds == [LedgerKind.CHARGE, LedgerKind.STARTING]


async def test_rate_limited_upload_is_retried_and_delivered(world: SlackWorld) -> None:
    world.service.delivery.retry_delays_s = [0.05]
    world.fake.fail("files.completeUploadExternal", "ratelimited", status=429, retry_after=1)
    job_id, shared = await make_track(world, "bossa nova --duration 1")
    assert shared.channel == CHANNEL
    assert (await world.service.get_job(job_id)).state is JobState.DONE
    assert len(world.fake.calls_to("files.completeUploadExternal")) == 2
    assert await world.balance() == STARTING_BALANCE - PRICE_1S


async def test_channel_the_bot_cannot_post_in_refunds_at_once(world: SlackWorld) -> None:
    world.fake.add_channel(PRIVATE, "secret", private=True, bot_member=False)

    await world.command("ambient drone --duration 1", channel=PRIVATE)
    text = await world.wait_private("/invite @musicbot")
    assert "10 tokens were refunded" in text
    (job,) = await world.jobs()
    assert (await world.wait_job(job.id)).state is JobState.CANCELLED
    assert await world.balance() == STARTING_BALANCE


async def test_public_channel_is_joined_before_posting(world: SlackWorld) -> None:
    world.fake.channels[CHANNEL].bot_member = False
    await world.command("sea shanty --duration 1")
    await status_message(world)
    assert [c["channel"] for c in world.fake.calls_to("conversations.join")] == [CHANNEL]


# ---------------------------------------------------------------------- buttons


@pytest.mark.parametrize("mode", ["http"])
async def test_cancel_button_and_command_refund(world: SlackWorld) -> None:
    # both jobs decode side by side (continuous batching): the button stops the second
    await world.command("long intro --duration 20")
    await world.command("second song --duration 3")
    first_id = job_id_of(await status_message(world, 0))
    second = await status_message(world, 1)
    second_id = job_id_of(second)

    ack = await world.click(f"musicbot_cancel:{second_id}")
    assert ack.status == 200
    await world.wait_private(f"#{second_id}")  # cancelled at once, or "stopping…" if started
    ended = await world.wait_job(second_id)
    assert ended.state is JobState.CANCELLED and ended.refunded == 10
    await world.fake.wait_for(lambda: "Cancelled." in second.text)

    await world.command("cancel")  # the newest active job: the long one
    await world.wait_private(f"#{first_id}")
    first = await world.wait_job(first_id)
    assert first.state is JobState.CANCELLED and first.refunded == first.price
    assert await world.balance() == STARTING_BALANCE


async def test_someone_elses_cancel_button_is_refused(world: SlackWorld) -> None:
    await world.command("long intro --duration 20")
    job_id = job_id_of(await status_message(world))
    await world.click(f"musicbot_cancel:{job_id}", user=OTHER)
    await world.wait_private("not allowed to cancel", user=OTHER)
    assert not (await world.service.get_job(job_id)).cancel_requested


async def test_reroll_button_makes_a_new_charged_track(world: SlackWorld) -> None:
    first_id, first = await make_track(world, "jazz trio --duration 1 --seed 7")
    await world.click(button_ids(first.blocks)[0])  # 🎲 Re-roll
    second = await world.fake.wait_for(lambda: world.fake.shared_files[1:])
    rerolled = await world.wait_job((await world.jobs())[-1].id)
    assert rerolled.id != first_id and rerolled.state is JobState.DONE
    assert rerolled.params.prompt == "jazz trio" and rerolled.params.seed != 7
    assert second[0].filename == f"musicbot-{rerolled.id}.mp3"
    assert await world.balance() == STARTING_BALANCE - 2 * PRICE_1S


async def test_extend_button_continues_the_track(world: SlackWorld, tmp_path: Path) -> None:
    first_id, first = await make_track(world, "funk groove --duration 1")
    extend = first.blocks[1]["elements"][1]
    assert extend["text"]["text"] == "⏩ Extend +2 s · 10 tokens"  # configured seconds, price
    await world.click(extend["action_id"])
    second = (await world.fake.wait_for(lambda: world.fake.shared_files[1:]))[0]
    extended = await world.wait_job((await world.jobs())[-1].id)
    assert extended.params.continue_from == first_id and extended.state is JobState.DONE
    assert extended.params.duration == 2.0  # limits.extend_seconds, not the original's length
    assert float(ffprobe(second.data, tmp_path)["duration"]) > 2.5  # the original plus 2 s
    assert f"continues #{first_id}" in second.blocks[0]["text"]["text"]
    assert await world.balance() == STARTING_BALANCE - 2 * PRICE_1S


# ---------------------------------------------------------------------- history re-send


async def test_track_command_uploads_a_stored_track_again(world: SlackWorld) -> None:
    job_id, first = await make_track(world, "harp arpeggios --duration 1")
    stored = Path((await world.service.get_job(job_id)).track_path)
    uploads = len(world.fake.calls_to("files.completeUploadExternal"))
    raw_before = len(world.fake.calls_to("files.getUploadURLExternal"))
    posts = len(world.fake.calls_to("upload"))

    await world.command(f"track #{job_id}", user=OTHER)  # another member of the workspace
    again = (await world.fake.wait_for(lambda: world.fake.shared_files[1:]))[0]
    assert len(world.fake.calls_to("files.getUploadURLExternal")) == raw_before + 1
    assert len(world.fake.calls_to("upload")) == posts + 1  # the raw POST of the bytes
    steps = ("files.getUploadURLExternal", "upload", "files.completeUploadExternal")
    assert [name for name, _ in world.fake.calls if name in steps][-3:] == list(steps)
    assert len(world.fake.calls_to("files.completeUploadExternal")) == uploads + 1
    assert again.id != first.id and again.channel == CHANNEL
    assert again.filename == f"musicbot-{job_id}.mp3"
    assert again.data == stored.read_bytes() == first.data
    decoded = AudioSegment.from_file(io.BytesIO(again.data), format="mp3")
    assert 500 < len(decoded) < 2000  # milliseconds
    text = again.blocks[0]["text"]["text"]
    assert f"Job #{job_id} for <@{MEMBER}>" in text  # still credited to its maker
    assert await world.balance(OTHER) == STARTING_BALANCE  # a re-send is free

    await world.command(f"track {job_id + 10_000}", user=OTHER)
    assert f"#{job_id + 10_000}" in await world.wait_private("not found", user=OTHER)

    stored.unlink()
    await world.command(f"track {job_id}", user=OTHER)
    assert f"#{job_id}" in await world.wait_private("no longer stored", user=OTHER)
    assert len(world.fake.shared_files) == 2


async def test_track_without_a_job_gets_its_usage(world: SlackWorld) -> None:
    await world.command("track")
    # escaped so Slack shows "<job>" instead of reading it as a link
    assert "/music track &lt;job&gt;" in await world.wait_private("*Usage:*")
    assert world.fake.shared_files == [] and await world.ledger() == []


# ---------------------------------------------------------------------- admins and input


async def test_non_admin_cannot_grant_tokens(world: SlackWorld) -> None:
    await world.command(f"admin grant <@{MEMBER}|ann> 1000 please")
    await world.wait_private("not allowed to manage tokens")
    assert await world.balance() == STARTING_BALANCE
    assert await world.ledger(MEMBER) == []  # nothing written: not even an account


async def test_workspace_admin_grants_and_reads_the_ledger(world: SlackWorld) -> None:
    await world.command(f"admin grant <@{MEMBER}> 50 birthday", user=ADMIN)
    await world.wait_private("balance: *150* tokens", user=ADMIN)
    await world.command(f"admin ledger {MEMBER}", user=ADMIN)
    text = await world.wait_private("grant +50", user=ADMIN)
    assert "birthday" in text
    assert await world.balance() == STARTING_BALANCE + 50


@pytest.mark.parametrize("text", ["drums --speed 3", "", "--duration 5"])
async def test_malformed_text_gets_the_usage(world: SlackWorld, text: str) -> None:
    await world.command(text)
    answer = await world.wait_private("*Usage:*")
    assert "/music &lt;prompt&gt;" in answer  # escaped: Slack shows "<prompt>"
    assert world.fake.messages_in(CHANNEL) == []
    assert await world.ledger() == []  # not even an account was opened


async def test_invalid_value_is_explained_and_not_charged(world: SlackWorld) -> None:
    await world.command("drums --duration 500")
    assert "duration" in (await world.wait_private("Invalid")).lower()
    assert await world.balance() == STARTING_BALANCE


async def test_balance_price_and_help(world: SlackWorld) -> None:
    await world.command("balance")
    await world.wait_private(f"Your balance: *{STARTING_BALANCE}* tokens")
    await world.command("price 20")
    await world.wait_private("A 20 s track with `debug` costs *40* tokens")
    await world.command("help")
    await world.wait_private("/music admin grant")


async def test_app_home_shows_balance_queue_and_tracks(world: SlackWorld) -> None:
    await make_track(world, "morning coffee --duration 1")
    await world.fake.send_socket("events_api", world.fake.home_opened(MEMBER))
    view = await world.fake.wait_for(lambda: world.fake.views.get(MEMBER))
    texts = " ".join(b["text"]["text"] for b in view["blocks"] if b["type"] == "section")
    assert view["type"] == "home"
    assert f"*{STARTING_BALANCE - PRICE_1S}* tokens" in texts and "morning coffee" in texts


# ---------------------------------------------------------------------- HTTP signatures


@pytest.mark.parametrize("mode", ["http"])
async def test_forged_or_stale_requests_are_rejected(world: SlackWorld) -> None:
    payload = world.fake.slash_command("free music --duration 1", user=MEMBER, channel=CHANNEL)
    forged = await world.fake.send_http("slash_commands", payload, secret="wrong-secret")
    stale = await world.fake.send_http("slash_commands", payload,
                                       timestamp=int(time.time()) - 600)
    assert (forged.status, stale.status) == (401, 401)
    assert world.fake.messages == [] and world.fake.responses == []
    assert await world.ledger() == []


@pytest.mark.parametrize(("mode", "wrong"), [("socket", "bot_token"), ("socket", "app_token"),
                                              ("http", "bot_token")])
async def test_rejected_tokens_fail_fast_with_a_clear_message(
    tmp_path: Path, mode: str, wrong: str
) -> None:
    fake = FakeSlack(**{wrong: "xoxb-revoked"})
    await fake.start()
    config = make_config(tmp_path, mode)
    try:
        async with Database(config.database_path) as db:
            frontend = SlackFrontend(config, MusicService(config, db), base_url=fake.api_url)
            with pytest.raises(ConfigError) as caught:
                await frontend.start()
            await frontend.stop()
    finally:
        await fake.stop()
    assert caught.value.key == f"SLACK_{wrong.upper()}"
    assert "Slack rejected it (invalid_auth)" in caught.value.user_message
    assert "xoxb-fake-bot" not in caught.value.user_message  # never echo a secret


# ---------------------------------------------------------------------- throttling


async def test_progress_edits_are_throttled_but_final_states_always_shown(
    tmp_path: Path,
) -> None:
    now = [1000.0]
    fake = FakeSlack()
    await fake.start()
    fake.add_channel(CHANNEL, "music")
    config = make_config(tmp_path)
    try:
        async with Database(config.database_path) as db:
            frontend = SlackFrontend(config, MusicService(config, db), base_url=fake.api_url,
                                     clock=lambda: now[0])
            await frontend.app.client.chat_postMessage(channel=CHANNEL, text="queued")
            job = _job(fake.messages[0].ts)
            for fraction in (0.1, 0.2, 0.3):
                await frontend.notify(JobEvent(EventKind.PROGRESS, job, progress=fraction))
            assert [e["text"].endswith("10%") for e in fake.messages[0].edits] == [True]
            now[0] += config.slack.progress_edit_interval_s
            await frontend.notify(JobEvent(EventKind.PROGRESS, job, progress=0.6))
            await frontend.notify(JobEvent(EventKind.FAILED, job, refunded=10, message="oom"))
            edits = [e["text"] for e in fake.messages[0].edits]
            assert len(edits) == 3 and edits[1].endswith("60%")
            assert "Refunded *10* tokens" in edits[2]
    finally:
        await fake.stop()


def _job(status_ts: str) -> Job:
    params = GenerationParams(prompt="test", duration=1.0, model="debug", seed=1)
    return Job(
        id=99, account=AccountKey("slack", "T0FAKE", MEMBER), params=params,
        state=JobState.RUNNING, price=10, idempotency_key="k", attempts=1, max_attempts=1,
        destination=Destination("slack", "T0FAKE", CHANNEL, MEMBER, status_ref=status_ts),
        error=None, cancel_requested=False, created_at=0.0, started_at=0.0, finished_at=None,
        track_path=None,
    )


# ---------------------------------------------------------------------- safe text (issue #11)

# What Slack sends in a slash command's ``text`` when a member types @channel, @here, a
# user, a channel or a user group (with "Escape channels, users, and links" enabled).
SLACK_PINGS = "<!channel> <!everyone> <!here> <@U0OTHER|other> <#C0MUSIC|music> <!subteam^S0CREW>"


def no_live_markup(text: str) -> None:
    """Nothing in ``text`` that Slack would turn into a notification or a link."""
    for raw in ("<!channel>", "<!everyone>", "<!here>", "<@U0OTHER", "<#C0MUSIC", "<!subteam^"):
        assert raw not in text, (raw, text)


async def test_member_text_is_posted_as_text_and_notifies_no_one(world: SlackWorld) -> None:
    await world.command(f"drums {SLACK_PINGS} --duration 1 --genre '<!here> & co'")

    status = await status_message(world)
    job_id = job_id_of(status)
    assert "&lt;!channel&gt; &lt;!everyone&gt; &lt;!here&gt;" in status.text
    assert "&lt;@U0OTHER|other&gt;" in status.text and "&lt;!here&gt; &amp; co" in status.text
    no_live_markup(status.text)
    no_live_markup(status.blocks[0]["text"]["text"])
    await world.wait_job(job_id)
    shared = (await world.fake.wait_for(lambda: world.fake.shared_files))[0]
    no_live_markup(shared.blocks[0]["text"]["text"])
    assert f"<@{MEMBER}>" in shared.blocks[0]["text"]["text"]  # our own mention stays
    await world.fake.wait_for(lambda: "Done." in status.text)
    no_live_markup(status.text)
    for method in ("chat.postMessage", "chat.update", "files.completeUploadExternal"):
        assert all("link_names" not in call for call in world.fake.calls_to(method)), method


async def test_an_error_quoting_member_text_is_escaped(world: SlackWorld) -> None:
    await world.command("drums --duration 1 --model '<!channel>'")
    answer = await world.wait_private("Invalid model")
    assert "&lt;!channel&gt;" in answer
    no_live_markup(answer)
    await world.command("drums --speed <!here>")
    no_live_markup(await world.wait_private("Unknown option"))
    assert world.fake.messages_in(CHANNEL) == [] and await world.ledger() == []


async def test_the_balance_goes_only_to_the_member(world: SlackWorld) -> None:
    await world.command("calm piano --duration 1")

    status = await status_message(world)
    job_id = job_id_of(status)
    assert "Charged *10* tokens" in status.text and "balance" not in status.text
    note = await world.wait_private(f"Job #{job_id}: charged")
    assert f"your balance is now *{STARTING_BALANCE - PRICE_1S}* tokens" in note
    await world.wait_job(job_id)
    await world.fake.wait_for(lambda: "Done." in status.text)
    assert all("balance" not in m.text for m in world.fake.messages_in(CHANNEL))


# ---------------------------------------------------------------------- logs (issue #11)


async def test_no_bearer_url_token_or_request_body_reaches_the_log(
    bot: RunningBot, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DEBUG before the frontend exists: bolt copies the root level into its loggers then.
    # aiosqlite stays at INFO as `musicbot` sets it (its DEBUG lines are SQL parameters).
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(logging.getLogger("aiosqlite"), "level", logging.INFO)
    async with open_world(bot, "http") as world:
        forged = world.fake.slash_command("forgedsecretword --duration 1", user=MEMBER,
                                          channel=CHANNEL)
        assert (await world.fake.send_http("slash_commands", forged,
                                           secret="wrong-secret")).status == 401
        real = world.fake.slash_command("realsecretword --duration 1", user=MEMBER,
                                        channel=CHANNEL)
        assert (await world.fake.send_http("slash_commands", real)).status == 200
        job_id = job_id_of(await status_message(world))
        await world.wait_job(job_id)
        await world.fake.wait_for(lambda: world.fake.shared_files)
        hooks = [p["response_url"].rsplit("/", 1)[-1] for p in (forged, real)]

    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert any(r.name.startswith("slack") and r.levelno == logging.DEBUG
               for r in caplog.records), "DEBUG logging of slack_bolt/slack_sdk was not on"
    assert "Invalid request signature" in logged  # bolt's INFO line is still there…
    for secret in (*hooks, "forgedsecretword", "realsecretword", BOT_TOKEN, SIGNING_SECRET):
        assert secret not in logged, secret  # …without the body, URLs or tokens
