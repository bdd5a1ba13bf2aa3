"""Stems end to end on Discord (Slack: test_stems_slack.py): the Stems button and /stems
through real discord.py against the fake, with the real App, worker and a random-initialised
HTDemucs.

The stems' content is NOISE (random Demucs weights); the tests check what a member sees: the
price on the button before anything is charged, the zip of four stems, the charge, and that
asking twice does not charge twice.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import AsyncIterator

import pytest

from bot.core.models import Actor
from tests.e2e.discord_fixtures import STARTING_BALANCE as DISCORD_START
from tests.e2e.discord_fixtures import DiscordWorld
from tests.e2e.discord_fixtures import open_world as open_discord

STEMS = ("drums", "bass", "other", "vocals")
PRICE_2S_TRACK = 10
STEMS_OF_2S = 5  # pricing.stems: 1 token per second, minimum 5


def job_id_of(text: str) -> int:
    match = re.search(r"Job #(\d+)", text)
    assert match, text
    return int(match.group(1))


def stems_in(data: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return sorted(name.rsplit("-", 1)[1].split(".")[0] for name in archive.namelist())


# --------------------------------------------------------------------------- Discord


def bob(world: DiscordWorld) -> Actor:
    return Actor("discord", str(world.studio.id), str(world.bob.id))


@pytest.fixture
async def discord(tmp_path, monkeypatch) -> AsyncIterator[DiscordWorld]:
    async with open_discord(tmp_path, monkeypatch) as world:
        yield world


async def discord_track(world: DiscordWorld) -> tuple[int, object]:
    it = await world.music("drum and bass", 2.0)
    status = await it.wait_message(lambda m: "queued" in m.content)
    job = job_id_of(status.content)
    result = await world.result(job)
    await world.fake.wait_for(lambda: "Done." in status.content)
    return job, result


async def test_discord_stems_button_shows_its_price_then_delivers_a_zip(
    discord: DiscordWorld,
) -> None:
    world = discord
    job, track = await discord_track(world)
    labels = {c["custom_id"]: c["label"] for c in track.components[0]["components"]}
    assert labels[f"musicbot:stems:{job}"] == f"🎚️ Stems · {STEMS_OF_2S} tokens"

    click = await world.fake.click(track, f"musicbot:stems:{job}", user=world.bob,
                                   guild=world.studio)

    receipt = await click.wait_message(lambda m: "queued" in m.content)
    assert f"Charged **{STEMS_OF_2S}** tokens" in receipt.content
    stems_job = job_id_of(receipt.content)
    sent = await world.fake.wait_message(
        lambda m: f"stems of #{job}" in m.content and bool(m.uploads), 120)
    assert f"Job #{stems_job}" in sent.content
    assert "noise" in sent.content  # random weights, and the message says so
    assert stems_in(sent.upload(".zip").data) == sorted(STEMS)
    assert sent.custom_ids == []  # nothing to re-roll or extend on stems
    balance = await world.service.balance(bob(world))
    assert balance == DISCORD_START - PRICE_2S_TRACK - STEMS_OF_2S


async def test_discord_stems_command_twice_charges_once(discord: DiscordWorld) -> None:
    world = discord
    job, _ = await discord_track(world)
    first = await world.fake.slash("stems", {"job": job}, user=world.bob, guild=world.studio)
    receipt = await first.wait_message(lambda m: "queued" in m.content)
    stems_job = job_id_of(receipt.content)
    await world.fake.wait_message(lambda m: f"stems of #{job}" in m.content and bool(m.uploads),
                                  120)

    again = await world.fake.slash("stems", {"job": job}, user=world.bob, guild=world.studio)

    answer = await again.wait_message()
    assert f"already made as job #{stems_job}" in answer.content
    balance = await world.service.balance(bob(world))
    assert balance == DISCORD_START - PRICE_2S_TRACK - STEMS_OF_2S


async def test_discord_stems_of_an_unfinished_job_is_refused_privately(
    discord: DiscordWorld,
) -> None:
    world = discord
    await world.app.worker.stop()  # the track stays queued
    it = await world.music("still waiting", 2.0)
    job = job_id_of((await it.wait_message(lambda m: "queued" in m.content)).content)
    before = await world.service.balance(bob(world))

    asked = await world.fake.slash("stems", {"job": job}, user=world.bob, guild=world.studio)

    answer = await asked.wait_message(lambda m: "no finished track" in m.content)
    assert answer.ephemeral
    assert await world.service.balance(bob(world)) == before


def test_a_zip_over_the_limit_sends_the_stems_that_fit(tmp_path) -> None:
    from bot.core.models import Track
    from bot.platforms.discord_send import stems_left_out, stems_that_fit

    paths = {}
    for stem, size in zip(STEMS, (300, 300, 300, 300), strict=True):
        paths[stem] = str(tmp_path / f"7.{stem}.mp3")
        (tmp_path / f"7.{stem}.mp3").write_bytes(b"x" * size)
    zipped = tmp_path / "7.stems.zip"
    zipped.write_bytes(b"z" * 1300)
    track = Track(str(zipped), "zip", 2.0, 1300, 32_000, stems=paths)

    assert stems_that_fit(track, 2000) == [str(zipped)]  # the zip fits: one file
    assert stems_left_out(track, 2000) == ()
    assert stems_that_fit(track, 700) == [paths["drums"], paths["bass"]]
    assert stems_left_out(track, 700) == ("other", "vocals")  # named in the message
