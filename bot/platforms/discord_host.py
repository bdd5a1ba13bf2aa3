"""What Discord commands and buttons need from the frontend, as a protocol.

:mod:`bot.platforms.discord_commands` and :mod:`bot.platforms.discord_buttons` are handed a
host (the :class:`~bot.platforms.discord_bot.DiscordFrontend`) instead of importing it, so
the imports point one way: ``discord_bot`` → commands/buttons → this module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import discord

from bot.config import Config
from bot.core.models import Actor, Destination, Receipt
from bot.core.service import MusicService

Interaction = discord.Interaction[Any]
Submit = Callable[[Actor, Destination, str], Awaitable[Receipt]]
"""Queues a job for (actor, destination, idempotency key): request_music, reroll or extend."""


class DiscordHost(Protocol):
    """The Discord frontend as commands and buttons see it."""

    config: Config
    service: MusicService

    def actor(self, interaction: Interaction) -> Actor:
        """Who is asking (admin rights vouched for by the frontend)."""

    async def start_job(self, interaction: Interaction, submit: Submit) -> None:
        """Defer, queue through ``submit`` and post the job's status message."""

    async def cancel_job(self, interaction: Interaction, job_id: int | None) -> None:
        """Cancel a job and answer the member privately."""

    async def send_stored_track(self, interaction: Interaction, job_id: int) -> None:
        """Upload a finished job's stored track again."""
