"""End-to-end: the real discord.py client, App and debug model against a fake Discord.

Each test acts as members do (slash commands, button clicks) and checks what they would see:
messages, ephemeral answers, uploaded files, balances and the ledger.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydub import AudioSegment

from bot.config import Secret, Secrets
from bot.core.errors import ConfigError
from bot.core.models import Actor
from bot.platforms.discord_bot import DiscordFrontend
from tests.e2e.discord_fixtures import STARTING_BALANCE, DiscordWorld, open_world
from tests.fakes.discord_fake import FakeMessage

PRICE_2S = 10  # 2 s at 2 tokens/s, raised to the 10-token minimum


@pytest.fixture
async def world(tmp_path, monkeypatch) -> AsyncIterator[DiscordWorld]:
    async with open_world(tmp_path, monkeypatch) as w:
        yield w


def job_id_of(message: FakeMessage) -> int:
    match = re.search(r"Job #(\d+)", message.content)
    assert match, message.content
    return int(match.group(1))


def mp3_seconds(data: bytes) -> float:
    return AudioSegment.from_file(io.BytesIO(data), format="mp3").duration_seconds


async def test_music_queues_shows_progress_and_delivers_a_playable_mp3(world: DiscordWorld):
    it = await world.music("calm piano", 2.0, seed=7)

    status = await it.wait_message(lambda m: "queued" in m.content)
    assert not status.ephemeral
    assert f"Charged **{PRICE_2S}** tokens" in status.content
    assert "balance" not in status.content  # the channel does not learn the member's balance
    job = job_id_of(status)
    private = await it.wait_message(lambda m: "balance" in m.content)
    assert private.ephemeral
    assert f"your balance is now **{STARTING_BALANCE - PRICE_2S}** tokens" in private.content
    assert status.custom_ids == [f"musicbot:cancel:{job}"]

    result = await world.result(job)
    assert result.source == "followup" and not result.ephemeral
    assert f"<@{world.bob.id}>" in result.content and "noise" in result.content
    assert mp3_seconds(result.upload(".mp3").data) == pytest.approx(2.0, abs=0.3)
    assert result.upload(".png").data.startswith(b"\x89PNG")
    assert result.custom_ids == [f"musicbot:{a}:{job}" for a in ("reroll", "extend", "cancel")]

    await world.fake.wait_for(lambda: "Done." in status.content)
    assert status.components == []  # no Cancel button on a finished job
    assert "seed 7" in status.content
    assert await world.say("balance") == f"Your balance: **{STARTING_BALANCE - PRICE_2S}** tokens."
    assert f"✅ #{job} done" in await world.say("history")


async def test_insufficient_tokens_is_private_and_charges_nothing(world: DiscordWorld):
    await world.say("tokens set", {"member": world.bob, "amount": 5}, user=world.olga)

    it = await world.music("drums", 2.0)

    answer = await it.wait_message()
    assert answer.ephemeral
    assert "this costs 10 and your balance is 5" in answer.content
    assert all(m.deleted for m in it.messages() if not m.ephemeral)  # no public trace
    assert await world.say("balance") == "Your balance: **5** tokens."
    assert await world.say("history") == "No tracks yet. Try `/music`."


async def test_failed_generation_is_refunded_and_says_so(world: DiscordWorld):
    # A channel whose upload limit not even a 32 kbps MP3 fits: encoding fails after the charge.
    it = await world.music("long ambient", 2.0, upload_limit=2_000)

    status = await it.wait_message(lambda m: "queued" in m.content)
    job = job_id_of(status)
    await world.fake.wait_for(lambda: "❌" in status.content)
    assert f"Refunded **{PRICE_2S}** tokens" in status.content
    assert await world.say("balance") == f"Your balance: **{STARTING_BALANCE}** tokens."
    ledger = await world.say("tokens ledger", {"member": world.bob}, user=world.olga)
    assert f"refund +{PRICE_2S} → {STARTING_BALANCE}" in ledger and f"job #{job}" in ledger


async def test_cancel_button_refunds_a_queued_job(world: DiscordWorld):
    await world.app.worker.stop()  # the queue is busy: the job waits
    it = await world.music("slow jazz", 2.0)
    status = await it.wait_message(lambda m: "queued" in m.content)
    job = job_id_of(status)

    stranger = await world.fake.click(status, f"musicbot:cancel:{job}", user=world.dj,
                                      guild=world.studio)  # admin role: may cancel
    answer = await stranger.wait_message()
    assert answer.ephemeral and f"Job #{job} cancelled. Refunded **{PRICE_2S}**" in answer.content
    await world.fake.wait_for(lambda: "🛑" in status.content)
    assert status.components == []
    assert await world.say("balance") == f"Your balance: **{STARTING_BALANCE}** tokens."


async def test_a_member_cannot_cancel_someone_elses_job(world: DiscordWorld):
    await world.app.worker.stop()
    it = await world.music("slow jazz", 2.0)
    status = await it.wait_message(lambda m: "queued" in m.content)
    job = job_id_of(status)
    world.fake.add_member(world.studio, world.eve)

    click = await world.fake.click(status, f"musicbot:cancel:{job}", user=world.eve,
                                   guild=world.studio)

    answer = await click.wait_message()
    assert answer.ephemeral and "not allowed to cancel" in answer.content
    assert await world.say("balance") == f"Your balance: **{STARTING_BALANCE - PRICE_2S}** tokens."
    assert f"#{job} queued · position 1" in await world.say("queue")

    assert await world.say("cancel") == f"Job #{job} cancelled. Refunded **{PRICE_2S}** tokens."
    assert await world.say("balance") == f"Your balance: **{STARTING_BALANCE}** tokens."


async def test_buttons_keep_working_after_a_restart(world: DiscordWorld):
    first = await world.music("synthwave", 2.0)
    status = await first.wait_message(lambda m: "queued" in m.content)
    job = job_id_of(status)
    track = await world.result(job)
    await world.fake.wait_for(lambda: "Done." in status.content)

    guild_sync = dataclasses.replace(world.config, discord=dataclasses.replace(
        world.config.discord, guild_ids=[str(world.studio.id)]))
    await world.restart(guild_sync)
    assert world.fake.identify_count == 2
    synced = {c["name"] for c in world.fake.commands[world.studio.id]}
    assert synced == {"music", "balance", "history", "queue", "cancel", "track", "price",
                      "help", "tokens", "share", "unshare"}

    reroll = await world.fake.click(track, f"musicbot:reroll:{job}", user=world.bob,
                                    guild=world.studio)
    receipt = await reroll.wait_message(lambda m: "queued" in m.content)
    again = job_id_of(receipt)
    assert again != job
    assert "balance" not in receipt.content
    note = await reroll.wait_message(lambda m: "balance" in m.content)  # charged again
    assert note.ephemeral and f"now **{STARTING_BALANCE - 2 * PRICE_2S}**" in note.content
    new_track = await world.result(again)
    assert mp3_seconds(new_track.upload(".mp3").data) == pytest.approx(2.0, abs=0.3)

    cancel = await world.fake.click(track, f"musicbot:cancel:{job}", user=world.bob,
                                    guild=world.studio)
    answer = await cancel.wait_message()
    assert answer.ephemeral and "already done" in answer.content


async def test_non_admins_cannot_change_balances(world: DiscordWorld):
    before = await world.say("tokens ledger", user=world.olga)

    answer = await world.say("tokens grant", {"member": world.bob, "amount": 1000},
                             user=world.bob)

    assert answer == "You are not allowed to manage tokens in this community."
    assert await world.say("tokens ledger", user=world.olga) == before
    assert await world.say("balance") == f"Your balance: **{STARTING_BALANCE}** tokens."
    assert "not allowed" in await world.say("tokens ledger", {"member": world.olga},
                                            user=world.bob)
    own = await world.say("tokens ledger", user=world.bob)  # the ledger is for admins
    assert "admins of this community" in own


async def test_admins_act_only_in_their_own_server(world: DiscordWorld):
    # olga owns studio (Manage Server) but is a plain member of other.
    refused = await world.say("tokens grant", {"member": world.bob, "amount": 50},
                              user=world.olga, guild=world.other)
    assert "not allowed" in refused

    granted = await world.say("tokens grant", {"member": world.bob, "amount": 50, "reason":
                                               "contest"}, user=world.dj)  # admin role
    assert granted == f"<@{world.bob.id}>'s new balance: **{STARTING_BALANCE + 50}** tokens."
    taken = await world.say("tokens take", {"member": world.bob, "amount": 20}, user=world.olga)
    assert taken == f"<@{world.bob.id}>'s new balance: **{STARTING_BALANCE + 30}** tokens."
    assert await world.say("balance", guild=world.other) == (
        f"Your balance: **{STARTING_BALANCE}** tokens.")
    assert await world.say("balance", {"member": world.bob}, user=world.eve,
                           guild=world.other) == (
        f"<@{world.bob.id}>'s balance: **{STARTING_BALANCE}** tokens.")


async def test_a_job_finishing_after_the_token_expired_is_posted_in_the_channel(
    world: DiscordWorld,
):
    await world.app.worker.stop()
    it = await world.music("night drive", 2.0)
    status = await it.wait_message(lambda m: "queued" in m.content)
    job = job_id_of(status)

    world.clock.advance(20 * 60)  # the interaction token lives 15 minutes
    world.fake.expire(it)
    await world.app.worker.start()

    result = await world.result(job)
    assert result.source == "channel" and result.channel_id == world.studio.channel_id
    assert f"<@{world.bob.id}>" in result.content
    assert mp3_seconds(result.upload(".mp3").data) == pytest.approx(2.0, abs=0.3)
    await world.fake.wait_for(lambda: "Done." in status.content)  # edited as the bot


async def test_in_dms_the_track_comes_back_by_dm(world: DiscordWorld):
    await world.app.worker.stop()
    it = await world.music("lullaby", 2.0, guild=None)
    job = job_id_of(await it.wait_message(lambda m: "queued" in m.content))
    world.clock.advance(20 * 60)
    world.fake.expire(it)
    await world.app.worker.start()

    result = await world.result(job)
    assert result.source == "dm"
    assert await world.say("balance", guild=None) == (
        f"Your balance: **{STARTING_BALANCE - PRICE_2S}** tokens.")
    assert await world.say("balance") == f"Your balance: **{STARTING_BALANCE}** tokens."


async def test_a_rate_limited_upload_is_retried(world: DiscordWorld):
    world.app.service.delivery.retry_delays_s = [0.05]
    world.fake.fail_next("POST", r"^/webhooks/\d+/[^/]+$", 429)

    it = await world.music("retry me", 2.0)
    job = job_id_of(await it.wait_message(lambda m: "queued" in m.content))

    result = await world.result(job)
    assert mp3_seconds(result.upload(".mp3").data) == pytest.approx(2.0, abs=0.3)
    assert await world.say("balance") == f"Your balance: **{STARTING_BALANCE - PRICE_2S}** tokens."


async def test_invalid_options_and_helpers(world: DiscordWorld):
    it = await world.music("x", 2.0, model="nonexistent")
    answer = await it.wait_message()
    assert answer.ephemeral and "Invalid model" in answer.content

    complete = await world.fake.slash("music", {"prompt": "x", "model": "deb"}, user=world.bob,
                                      guild=world.studio, focused="model")
    assert (await complete.wait_callback())["data"]["choices"] == [
        {"name": "debug", "value": "debug"}]
    # "e" is in medium, large, melody…: only the loaded model is offered.
    loaded_only = await world.fake.slash("music", {"prompt": "x", "model": "e"}, user=world.bob,
                                         guild=world.studio, focused="model")
    assert (await loaded_only.wait_callback())["data"]["choices"] == [
        {"name": "debug", "value": "debug"}]
    assert await world.say("price", {"duration": 2.0}) == (
        f"A 2 s track with `debug` costs **{PRICE_2S}** tokens.")
    assert "/music" in await world.say("help")


async def test_progress_edits_are_throttled(world: DiscordWorld):
    it = await world.music("long drone", 6.0)
    status = await it.wait_message(lambda m: "queued" in m.content)
    started = time.monotonic()

    await world.fake.wait_for(lambda: "Done." in status.content, timeout=60)

    elapsed = time.monotonic() - started
    progress = [text for text in status.history if "Generating…" in text]
    interval = world.config.discord.progress_edit_interval_s
    assert len(progress) <= elapsed / interval + 1  # the worker reports every 0.05 s
    assert status.history[-1].endswith("Done.")


async def test_extend_button_continues_the_track(world: DiscordWorld):
    it = await world.music("folk guitar", 2.0)
    status = await it.wait_message(lambda m: "queued" in m.content)
    job = job_id_of(status)
    track = await world.result(job)
    await world.fake.wait_for(lambda: "Done." in status.content)
    labels = {c["custom_id"]: c["label"] for c in track.components[0]["components"]}
    assert labels[f"musicbot:extend:{job}"] == "⏩ Extend +10 s · 20 tokens"  # as on Slack

    click = await world.fake.click(track, f"musicbot:extend:{job}", user=world.bob,
                                   guild=world.studio)

    receipt = await click.wait_message(lambda m: "queued" in m.content)
    assert f"continues #{job}" in receipt.content and "Charged **20** tokens" in receipt.content
    longer = await world.result(job_id_of(receipt))
    assert mp3_seconds(longer.upload(".mp3").data) == pytest.approx(12.0, abs=1.0)


async def test_tokens_never_reach_the_logs(world: DiscordWorld, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    it = await world.music("secret jam", 2.0)
    job = job_id_of(await it.wait_message(lambda m: "queued" in m.content))
    await world.result(job)

    ours = "\n".join(r.getMessage() for r in caplog.records
                     if r.name.startswith(("discord", "bot", "generation")))
    assert "INTERACTION_CREATE" in ours and "/webhooks/" in ours  # discord.py logged at DEBUG
    assert world.fake.valid_token not in ours
    assert it.token not in ours


async def test_a_refused_token_stops_start_up_with_a_clear_error(world: DiscordWorld):
    wrong = dataclasses.replace(world.config, secrets=Secrets(discord_token=Secret("nope")))

    with pytest.raises(ConfigError, match=r"DISCORD_TOKEN.*refused"):
        await DiscordFrontend(wrong, world.service).start()


async def test_a_token_dead_before_its_time_falls_back_to_the_channel(world: DiscordWorld):
    await world.app.worker.stop()
    it = await world.music("early end", 2.0)
    status = await it.wait_message(lambda m: "queued" in m.content)
    world.fake.expire(it)  # Discord refuses the webhook although our clock says it is valid
    await world.app.worker.start()

    result = await world.result(job_id_of(status))
    assert result.source == "channel" and f"<@{world.bob.id}>" in result.content
    await world.fake.wait_for(lambda: "Done." in status.content)


async def finished_job(world: DiscordWorld, prompt: str) -> int:
    """A 2 s track by bob in studio, delivered and marked done."""
    status = await (await world.music(prompt, 2.0)).wait_message(lambda m: "queued" in m.content)
    job = job_id_of(status)
    await world.result(job)
    await world.fake.wait_for(lambda: "Done." in status.content)
    return job


async def test_track_sends_a_stored_track_again_to_any_member_of_the_server(world: DiscordWorld):
    job = await finished_job(world, "harp")
    stored, _ = await world.service.stored_track(
        Actor("discord", str(world.studio.id), str(world.bob.id)), job)
    world.fake.add_member(world.studio, world.eve)  # a plain member, not the track's owner

    again = await world.fake.slash("track", {"job": job}, user=world.eve, guild=world.studio)

    sent = await again.wait_message(lambda m: bool(m.uploads))
    assert sent.source == "followup" and not sent.ephemeral
    assert f"Job #{job} for <@{world.bob.id}>" in sent.content
    mp3 = sent.upload(".mp3").data
    assert mp3 == Path(stored.track_path).read_bytes()
    assert mp3_seconds(mp3) == pytest.approx(2.0, abs=0.3)
    assert sent.upload(".png").data.startswith(b"\x89PNG")
    assert sent.custom_ids == [f"musicbot:{a}:{job}" for a in ("reroll", "extend", "cancel")]

    too_small = await world.fake.slash("track", {"job": job}, user=world.eve,
                                       guild=world.studio, upload_limit=len(mp3) - 1)
    refused = await too_small.wait_message()
    assert refused.ephemeral and "over this channel's upload limit" in refused.content
    assert all(m.deleted for m in too_small.messages() if not m.ephemeral)


async def test_track_refuses_unknown_and_deleted_tracks_privately(world: DiscordWorld):
    unknown = await world.fake.slash("track", {"job": 999}, user=world.bob, guild=world.studio)
    answer = await unknown.wait_message()
    assert answer.ephemeral and answer.content == "Job #999 was not found."
    assert all(m.deleted for m in unknown.messages() if not m.ephemeral)

    job = await finished_job(world, "bells")
    stored, _ = await world.service.stored_track(
        Actor("discord", str(world.studio.id), str(world.bob.id)), job)
    Path(stored.track_path).unlink()

    gone = await world.fake.slash("track", {"job": job}, user=world.bob, guild=world.studio)
    answer = await gone.wait_message()
    assert answer.ephemeral and f"#{job} is no longer stored" in answer.content
    assert not any(m.uploads for m in gone.messages())
    assert all(m.deleted for m in gone.messages() if not m.ephemeral)


# ---------------------------------------------------------------------- safe text (issue #11)

PINGS = ["<@123>", f"<@{2**60}>", "@everyone", "@here", "<@&456>", "<@!789>"]


async def test_member_text_never_notifies_anyone(world: DiscordWorld):
    prompt = "drums " + " ".join(PINGS)
    it = await world.music(prompt, 2.0, genre="@everyone <@123>")

    status = await it.wait_message(lambda m: "queued" in m.content)
    job = job_id_of(status)
    result = await world.result(job)
    await world.fake.wait_for(lambda: "Done." in status.content)

    for message in (status, result):
        assert message.allowed_mentions is not None and message.allowed_mentions["parse"] == []
        assert message.notified() == set()
        # the text still shows what the member typed, with the mention syntax broken
        assert "@\u200beveryone" in message.content and "<@\u200b123>" in message.content
        assert "<@123>" not in message.content and "@everyone" not in message.content


async def test_channel_fallback_delivery_pings_only_the_requester(world: DiscordWorld):
    await world.app.worker.stop()
    it = await world.music(f"night drive <@{world.olga.id}> @here", 2.0)
    job = job_id_of(await it.wait_message(lambda m: "queued" in m.content))
    world.clock.advance(20 * 60)
    world.fake.expire(it)
    await world.app.worker.start()

    result = await world.result(job)
    assert result.source == "channel"
    assert result.notified() == {str(world.bob.id)}
    assert result.allowed_mentions["users"] == [world.bob.id]


async def test_a_refused_request_quoting_a_mention_pings_no_one(world: DiscordWorld):
    it = await world.music("x", 2.0, model="<@123> @everyone")
    answer = await it.wait_message()
    assert answer.ephemeral and "Invalid model" in answer.content
    assert answer.notified() == set()
    assert await world.say("balance") == f"Your balance: **{STARTING_BALANCE}** tokens."


# ---------------------------------------------------------------------- failure texts (#11)


async def test_a_refused_upload_says_what_to_fix_not_generation_failed(world: DiscordWorld):
    await world.app.worker.stop()
    it = await world.music("forbidden tune", 2.0)
    status = await it.wait_message(lambda m: "queued" in m.content)
    await it.wait_message(lambda m: "your balance is now" in m.content)
    # the track's follow-up is refused, and so is the channel post it falls back to
    world.fake.fail_next("POST", r"^/webhooks/\d+/[^/]+$", 403)
    world.fake.fail_next("POST", r"^/channels/\d+/messages$", 403)
    await world.app.worker.start()

    await world.fake.wait_for(lambda: "📦" in status.content)

    assert "Generation failed" not in status.content
    assert "The track was made but could not be delivered" in status.content
    assert "ask an admin to give me the Attach Files and Send Messages permissions" in (
        status.content)
    assert "403" not in status.content
    job = job_id_of(status)
    assert f"/track {job}" in status.content  # the track is kept: no refund, /track gets it
    assert await world.say("balance") == (
        f"Your balance: **{STARTING_BALANCE - PRICE_2S}** tokens.")


async def test_a_redelivered_interaction_logs_one_info_line_and_charges_once(
    world: DiscordWorld, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    await world.app.worker.stop()
    it = await world.music("only once", 2.0)
    await it.wait_message(lambda m: "queued" in m.content)

    await world.fake.redeliver(it)

    for _ in range(1200):  # the log line comes after the fake's last change: poll for it
        if any("already acknowledged" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.05)
    repeats = [r for r in caplog.records if "already acknowledged" in r.getMessage()]
    assert len(repeats) == 1 and repeats[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert await world.say("balance") == f"Your balance: **{STARTING_BALANCE - PRICE_2S}** tokens."


async def test_a_refused_resend_tells_the_member_what_to_fix(world: DiscordWorld):
    it = await world.music("resend me", 2.0)
    job = job_id_of(await it.wait_message(lambda m: "queued" in m.content))
    await world.result(job)
    world.fake.fail_next("POST", r"^/webhooks/\d+/[^/]+$", 413)

    again = await world.fake.slash("track", {"job": job}, user=world.bob, guild=world.studio)

    answer = await again.wait_message(lambda m: m.ephemeral)
    assert f"I could not post job #{job}'s file" in answer.content
    assert "too large" in answer.content and "413" not in answer.content
