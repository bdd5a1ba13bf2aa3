"""Persistent buttons: Re-roll, Extend and Cancel, carrying the job id in their custom_id.

They are :class:`discord.ui.DynamicItem` s: the client matches any clicked custom_id
against ``musicbot:<action>:<job id>``, so buttons posted before a restart keep working
without remembering anything in memory. Each click answers quickly and calls the core; the
core decides who may do what (re-roll in the same community, cancel by owner or admin).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import discord

from bot.core.errors import MusicBotError
from bot.platforms.discord_host import DiscordHost
from bot.platforms.discord_send import already_acknowledged

log = logging.getLogger(__name__)

PREFIX = "musicbot"


def _frontend(interaction: discord.Interaction[Any]) -> DiscordHost:
    return interaction.client.frontend  # type: ignore[attr-defined]


class _JobButton:
    """Shared behaviour: build the button, parse the job id, route errors to the member."""

    action = ""
    label = ""
    style = discord.ButtonStyle.secondary

    @classmethod
    def button(cls, job_id: int, label: str | None = None) -> discord.ui.Button[Any]:
        return discord.ui.Button(label=label or cls.label, style=cls.style,
                                 custom_id=f"{PREFIX}:{cls.action}:{job_id}")

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
        match: re.Match[str], /,
    ) -> Any:
        return cls(int(match["job"]))  # type: ignore[call-arg]

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            await self.run(interaction, _frontend(interaction))
        except MusicBotError as err:
            await send_ephemeral(interaction, err.user_message)
        except Exception as exc:
            if already_acknowledged(exc):
                log.info("the %s click %s was already acknowledged; ignoring the repeat",
                         self.action, interaction.id)
                return
            log.exception("the %s button failed", self.action)
            await send_ephemeral(interaction, "Something went wrong on our side. Please try "
                                 "again in a moment.")

    async def run(self, interaction: discord.Interaction[Any], frontend: DiscordHost) -> None:
        raise NotImplementedError


class RerollButton(_JobButton, discord.ui.DynamicItem[discord.ui.Button[Any]],
                   template=rf"{PREFIX}:reroll:(?P<job>[0-9]+)"):
    """Same request, new random seed; charged again (the receipt shows the price)."""

    action, label, style = "reroll", "🎲 Re-roll", discord.ButtonStyle.primary

    # Each button keeps its own __init__ (duplicates): DynamicItem wants a template on every
    # subclass, so _JobButton cannot subclass it and its super().__init__ would not type-check.
    def __init__(self, job_id: int) -> None:
        super().__init__(self.button(job_id))
        self.job_id = job_id

    async def run(self, interaction: discord.Interaction[Any], frontend: DiscordHost) -> None:
        service = frontend.service
        await frontend.start_job(interaction, lambda actor, dest, key: service.reroll(
            actor, self.job_id, dest, key))


class ExtendButton(_JobButton, discord.ui.DynamicItem[discord.ui.Button[Any]],
                   template=rf"{PREFIX}:extend:(?P<job>[0-9]+)"):
    """Continue the finished track by ``limits.extend_seconds`` (charged as new audio).

    The label (seconds and price) is rendered when the track is posted; a click is matched
    by custom_id alone, so the label a restored button carries does not matter.
    """

    action, label = "extend", "⏩ Extend"

    def __init__(self, job_id: int, label: str | None = None) -> None:
        super().__init__(self.button(job_id, label))
        self.job_id = job_id

    async def run(self, interaction: discord.Interaction[Any], frontend: DiscordHost) -> None:
        service = frontend.service
        seconds = frontend.config.limits.extend_seconds
        await frontend.start_job(interaction, lambda actor, dest, key: service.extend(
            actor, self.job_id, seconds, dest, key))


class CancelButton(_JobButton, discord.ui.DynamicItem[discord.ui.Button[Any]],
                   template=rf"{PREFIX}:cancel:(?P<job>[0-9]+)"):
    """Cancel a queued or running job (its requester or an admin); refunds follow."""

    action, label, style = "cancel", "🛑 Cancel", discord.ButtonStyle.danger

    def __init__(self, job_id: int) -> None:
        super().__init__(self.button(job_id))
        self.job_id = job_id

    async def run(self, interaction: discord.Interaction[Any], frontend: DiscordHost) -> None:
        await frontend.cancel_job(interaction, self.job_id)


class StemsButton(_JobButton, discord.ui.DynamicItem[discord.ui.Button[Any]],
                  template=rf"{PREFIX}:stems:(?P<job>[0-9]+)"):
    """Split the finished track into drums, bass, other and vocals (charged; the label shows
    the price before the click, rendered when the track is posted)."""

    action, label = "stems", "🎚️ Stems"

    def __init__(self, job_id: int, label: str | None = None) -> None:
        super().__init__(self.button(job_id, label))
        self.job_id = job_id

    async def run(self, interaction: discord.Interaction[Any], frontend: DiscordHost) -> None:
        service = frontend.service
        await frontend.start_job(interaction, lambda actor, dest, key: service.stems(
            actor, self.job_id, dest, key))


DYNAMIC_ITEMS = (RerollButton, ExtendButton, CancelButton, StemsButton)


def status_view(job_id: int) -> discord.ui.View:
    """Buttons on a queued or running job's status message."""
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def result_view(job_id: int, extend_label: str, stems_label: str | None = None
                ) -> discord.ui.View:
    """Buttons on a delivered track; ``extend_label`` from :func:`render.extend_label`,
    ``stems_label`` from :func:`render.stems_label` (no Stems button without it)."""
    view = discord.ui.View(timeout=None)
    for item in (RerollButton(job_id), ExtendButton(job_id, extend_label),
                 CancelButton(job_id)):
        view.add_item(item)
    if stems_label is not None:
        view.add_item(StemsButton(job_id, stems_label))
    return view


def group_view(jobs: list[tuple[int, str]]) -> discord.ui.View:
    """Buttons on a group's message: one row per track, (job id, Extend label) each; at most
    5 rows fit in a Discord message, so the caller posts at most 5 tracks per message."""
    view = discord.ui.View(timeout=None)
    for row, (job_id, extend_label) in enumerate(jobs):
        for item in (RerollButton(job_id), ExtendButton(job_id, extend_label)):
            item.row = row
            view.add_item(item)
    return view


async def send_ephemeral(interaction: discord.Interaction[Any], text: str) -> None:
    """Answer only the member, whether or not the interaction was already acknowledged."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as exc:
        log.warning("could not answer an interaction: %s", exc.status)
