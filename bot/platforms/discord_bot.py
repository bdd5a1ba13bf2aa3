"""Discord frontend: slash commands, persistent buttons, progress edits and track delivery.

A thin discord.py adapter over :class:`~bot.core.service.MusicService`. Commands live in
:mod:`bot.platforms.discord_commands`, buttons in :mod:`bot.platforms.discord_buttons`,
the REST plumbing (webhook while the interaction token lives, channel or DM after) in
:mod:`bot.platforms.discord_send`. Money, limits and permissions are the core's business;
this module only vouches for who is an admin (Manage Server, the configured role, owners).
The bot token comes from ``config.secrets`` and is never logged.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import discord
from discord import app_commands

from bot import log_redaction
from bot.config import Config
from bot.core.errors import ConfigError, DeliveryError, MusicBotError
from bot.core.models import (
    DM_COMMUNITY,
    Actor,
    Destination,
    EventKind,
    Job,
    JobEvent,
    JobKind,
    Track,
)
from bot.core.service import MusicService
from bot.platforms import render
from bot.platforms.discord_buttons import (
    DYNAMIC_ITEMS,
    group_view,
    result_view,
    send_ephemeral,
    status_view,
)
from bot.platforms.discord_commands import build_commands
from bot.platforms.discord_host import Submit
from bot.platforms.discord_send import (
    DISCORD,
    NO_PINGS,
    Sender,
    already_acknowledged,
    followup_track,
    http_reason,
    stems_left_out,
)

log = logging.getLogger(__name__)

TOKEN_LIFETIME_S = 15 * 60
"""Discord interaction tokens (follow-ups, edits) are valid for 15 minutes."""
TOKEN_MARGIN_S = 60
"""Stop using a token a minute early: an upload can take a while and must not expire midway."""
GROUP_PER_MESSAGE = 5
"""Tracks per group message: each has a row of buttons, and a message holds 5 rows."""
TERMINAL_EVENTS = (EventKind.DONE, EventKind.FAILED, EventKind.CANCELLED,
                   EventKind.UNDELIVERED)


class MusicClient(discord.Client):
    """The discord.py client, built by the frontend and set up in :meth:`setup_hook`."""

    def __init__(self, frontend: DiscordFrontend, **options: Any) -> None:
        # Only the non-privileged Guilds intent: it brings role names (for admin_role).
        intents = discord.Intents.none()
        intents.guilds = True
        # Nothing pings by default; the one deliberate ping (channel fallback delivery of the
        # member's own track) opts in per message.
        super().__init__(intents=intents, allowed_mentions=NO_PINGS, **options)
        self.frontend = frontend
        self.tree = app_commands.CommandTree(self)
        self.tree.error(frontend.on_tree_error)

    async def setup_hook(self) -> None:
        # Dynamic items match custom_id patterns, so buttons of any earlier run keep working.
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        for command in build_commands(self.frontend):
            self.tree.add_command(command)
        await self.frontend.sync_commands(self.tree)


class DiscordFrontend:
    """Implements :class:`bot.core.ports.Frontend` for Discord (``platform = "discord"``)."""

    platform = "discord"

    def __init__(
        self, config: Config, service: MusicService, *, clock: Callable[[], float] = time.time,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        """``client_options`` are passed to :class:`discord.Client` (tests shorten waits)."""
        self.config = config
        self.service = service
        self.clock = clock
        self._client_options = client_options or {}
        self._client: MusicClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._refs: dict[int, int] = {}
        """Job id → status message id, known before the store has it."""
        self._unshown: dict[int, JobEvent] = {}
        """Latest event of a job whose status message is not posted yet."""
        self._last_edit: dict[int, float] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        """Jobs whose upload failed here: a later failure is a delivery failure."""

    # ------------------------------------------------------------------ lifecycle
    @property
    def client(self) -> MusicClient:
        if self._client is None:
            raise RuntimeError("the Discord frontend is not started")
        return self._client

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._client is not None and not self._client.is_closed()

    async def start(self) -> None:
        """Log in, register buttons and commands, then connect to the gateway in the background.

        Raises:
            ConfigError: DISCORD_TOKEN is missing or Discord refused it.
        """
        token = self.config.secrets.discord_token
        if token is None:
            raise ConfigError("DISCORD_TOKEN", "is not set (see docs/discord.md)")
        _redact_discord_logs()
        log_redaction.install()  # stored destinations carry interaction tokens
        self._client = MusicClient(self, **self._client_options)
        try:
            await self._client.login(token.reveal())
        except BaseException as exc:
            await self._client.close()
            self._client = None
            if isinstance(exc, discord.LoginFailure):
                raise ConfigError("DISCORD_TOKEN", "Discord refused the token") from None
            raise
        self._task = asyncio.create_task(self._client.connect(reconnect=True))
        self._task.add_done_callback(_log_connection_end)

    async def stop(self) -> None:
        """Close the gateway connection and the HTTP session."""
        if self._client is not None:
            await self._client.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self._client = None
        self._task = None

    async def sync_commands(self, tree: app_commands.CommandTree[Any]) -> None:
        """Sync to each configured guild (instant) or globally (can take up to an hour)."""
        guild_ids = [g for g in self.config.discord.guild_ids if g.strip().isdigit()]
        if len(guild_ids) != len(self.config.discord.guild_ids):
            log.error("discord.guild_ids must be numeric server ids; ignoring the others")
        targets = [discord.Object(int(g)) for g in guild_ids] if guild_ids else [None]
        for guild in targets:
            if guild is not None:
                tree.copy_global_to(guild=guild)
            try:
                synced = await tree.sync(guild=guild)
            except discord.HTTPException as exc:
                # 403: the bot is not in that guild or lacks the applications.commands scope.
                log.error("could not sync commands to %s: %s %s",
                          guild.id if guild else "all guilds", exc.status, exc.text)
                continue
            log.info("synced %d commands to %s", len(synced), guild.id if guild else "all guilds")

    # ------------------------------------------------------------------ who and where
    def community(self, interaction: discord.Interaction[Any]) -> str:
        return str(interaction.guild_id) if interaction.guild_id else DM_COMMUNITY

    def is_admin(self, interaction: discord.Interaction[Any]) -> bool:
        """Owners from the config, members with Manage Server, or with the admin role."""
        if str(interaction.user.id) in self.config.discord.owners:
            return True
        if interaction.guild_id is None:
            return False
        if interaction.permissions.manage_guild:
            return True
        role = self.config.discord.admin_role
        roles = getattr(interaction.user, "roles", [])
        return bool(role) and any(r.name == role for r in roles)

    def actor(self, interaction: discord.Interaction[Any]) -> Actor:
        user = interaction.user
        return Actor(self.platform, self.community(interaction), str(user.id),
                     is_admin=self.is_admin(interaction), display_name=user.display_name)

    def destination(self, interaction: discord.Interaction[Any]) -> Destination:
        """Where the job's result goes; stored on the job, so it outlives this process."""
        return Destination(
            platform=self.platform,
            community=self.community(interaction),
            channel=str(interaction.channel_id),
            user=str(interaction.user.id),
            interaction_token=interaction.token,
            token_expires_at=self.clock() + TOKEN_LIFETIME_S - TOKEN_MARGIN_S,
            upload_limit=interaction.filesize_limit,
            extra={"application_id": str(interaction.application_id),
                   "dm": interaction.guild_id is None},
        )

    def _sender(self) -> Sender:
        return Sender(self.client, self.clock)

    # ------------------------------------------------------------------ jobs
    async def start_job(self, interaction: discord.Interaction[Any], submit: Submit) -> None:
        """Defer, queue through ``submit``, and turn the deferred reply into the status message.

        Errors of the core replace the public "thinking…" message by an ephemeral one, so
        nothing about a refused request is shown to the channel. The public receipt has no
        balance; the member's balance follows in an ephemeral message only they see.
        """
        await interaction.response.defer(thinking=True)
        try:
            receipt = await submit(self.actor(interaction), self.destination(interaction),
                                   f"discord:{interaction.id}")
        except MusicBotError as err:
            await _refuse(interaction, err.user_message)
            return
        job = receipt.job
        view = None if receipt.duplicate or job.state.terminal else status_view(job.id)
        async with self._lock(job.id):
            try:
                message = await interaction.edit_original_response(
                    content=render.receipt_text(receipt, DISCORD), view=view,
                    allowed_mentions=NO_PINGS)
            except discord.HTTPException as exc:
                # The job is queued and paid: it is still delivered, just without progress.
                log.warning("could not post the status of job %d: %s", job.id, exc.status)
                return
            if receipt.duplicate:
                return
            await _tell_privately(interaction, render.charged_text(receipt))
            self._refs[job.id] = message.id
            self._last_edit[job.id] = self.clock()
            await self.service.set_status_ref(job.id, str(message.id))
            missed = self._unshown.pop(job.id, None)
            if missed is not None:
                await self._show(missed, message.id)
        if missed is not None and missed.kind in TERMINAL_EVENTS:
            self._forget(job.id)

    async def notify(self, event: JobEvent) -> None:
        """Edit the job's status message; progress at most once per configured interval."""
        job = event.job
        terminal = event.kind in TERMINAL_EVENTS
        if job.group_id is not None and job.id != job.group_id:
            return  # a group has one status message, driven by its first job
        if not self.running:
            log.debug("not connected; %s of job %d not shown", event.kind.value, job.id)
            return
        async with self._lock(job.id):
            ref = self._refs.get(job.id) or _as_int(job.destination.status_ref)
            if ref is None:
                # The status message is being posted right now: start_job shows this after.
                self._unshown[job.id] = event
                return
            interval = self.config.discord.progress_edit_interval_s
            last = self._last_edit.get(job.id)
            if not terminal and last is not None and self.clock() - last < interval:
                return
            await self._show(event, ref)
        if terminal:
            self._forget(job.id)

    async def _show(self, event: JobEvent, message_id: int) -> None:
        self._last_edit[event.job.id] = self.clock()
        view = None if event.kind in TERMINAL_EVENTS else status_view(event.job.id)
        text = render.event_text(event, DISCORD)
        await self._sender().edit(event.job.destination, message_id, text, view)

    async def deliver(self, job: Job, track: Track) -> None:
        """Upload the track (and waveform) with Re-roll / Extend / Cancel buttons.

        Raises:
            DeliveryError: the file does not fit or Discord refused it (retryable on 429/5xx).
        """
        if not self.running:
            raise DeliveryError("the Discord connection is not running")
        limit = job.destination.upload_limit
        if track.stems:  # the zip when it fits, else the stems that fit (discord_send)
            await self._sender().deliver(job, track, render.stems_result_text(
                job, track, DISCORD, stems_left_out(track, limit)), self._result_view(job))
            return
        if track.size_bytes > limit:
            raise DeliveryError(f"the file ({_mib(track.size_bytes)}) is over this channel's "
                                f"upload limit ({_mib(limit)})", retryable=False)
        await self._sender().deliver(job, track, self._result_text(job, track),
                                     self._result_view(job))

    def _result_text(self, job: Job, track: Track) -> str:
        """The finished-track message, with its page link when ``api.public_base_url`` is set."""
        link = render.page_line(self.config, job, self.platform)
        return render.result_text(job, track, DISCORD, link)

    async def deliver_group(self, made: list[Job], failed: list[Job]) -> None:
        """A group's tracks in one message per 5 (Discord's button rows), each track with
        its own Re-roll / Extend row; the text names the failed jobs and their refunds.

        Raises:
            DeliveryError: as :meth:`deliver` (the whole group is retried together).
        """
        if not self.running:
            raise DeliveryError("the Discord connection is not running")
        if not made:
            return
        for number, chunk in enumerate(_pack(made, made[0].destination.upload_limit)):
            text = render.group_result_text(chunk, failed if number == 0 else [], DISCORD)
            view = group_view([(job.id, f"#{job.id} " + render.extend_label(self.config, job))
                               for job in chunk])
            await self._sender().deliver_many(chunk, text, view)

    async def send_stored_track(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        """``/track``: upload a finished job's stored file again, publicly, with its buttons.

        Any member of the job's community may ask. Refusals (unknown job, file deleted,
        over this channel's upload limit) are answered only to the member.
        """
        await interaction.response.defer(thinking=True)
        try:
            job, track = await self.service.stored_track(self.actor(interaction), job_id)
        except MusicBotError as err:
            await _refuse(interaction, err.user_message)
            return
        limit = interaction.filesize_limit
        if track.size_bytes > limit:
            await _refuse(interaction, f"Job #{job.id}'s file ({_mib(track.size_bytes)}) is "
                          f"over this channel's upload limit ({_mib(limit)}).")
            return
        try:
            await followup_track(interaction, job, track,
                                 self._result_text(job, track), self._result_view(job))
        except discord.HTTPException as exc:
            log.info("could not re-send job %d: %s %s", job.id, exc.status, exc.code)
            await _refuse(interaction, f"I could not post job #{job.id}'s file: "
                          f"{http_reason(exc)}.")

    async def cancel_job(self, interaction: discord.Interaction[Any], job_id: int | None) -> None:
        """``/cancel`` and the Cancel buttons: an ephemeral answer; the status edit follows."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        job = await self.service.cancel(self.actor(interaction), job_id)
        if job.refunded:
            text = f"Job #{job.id} cancelled. Refunded **{job.refunded}** tokens."
        else:
            text = f"Stopping job #{job.id}… its tokens come back as soon as it stops."
        await interaction.followup.send(text, ephemeral=True)

    def _result_view(self, job: Job) -> discord.ui.View:
        if job.kind != JobKind.MUSIC:
            return discord.ui.View(timeout=None)  # stems: nothing to re-roll or extend
        stems = render.stems_label(self.config, job) if self.config.models.stems else None
        return result_view(job.id, render.extend_label(self.config, job), stems)

    def _lock(self, job_id: int) -> asyncio.Lock:
        return self._locks.setdefault(job_id, asyncio.Lock())

    def _forget(self, job_id: int) -> None:
        for table in (self._refs, self._unshown, self._last_edit, self._locks):
            table.pop(job_id, None)

    # ------------------------------------------------------------------ errors
    async def on_tree_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        """Last resort for command errors: member-facing messages for ours, a log for the rest."""
        original = getattr(error, "original", error)
        if already_acknowledged(original):
            # A re-delivered interaction another handler (or process) already answered.
            log.info("interaction %s was already acknowledged; ignoring the repeat",
                     interaction.id)
        elif isinstance(original, MusicBotError):
            await send_ephemeral(interaction, original.user_message)
        elif isinstance(error, app_commands.NoPrivateMessage):
            await send_ephemeral(interaction, "This command works only in a server.")
        elif isinstance(error, (app_commands.TransformerError, app_commands.CheckFailure)):
            await send_ephemeral(interaction, str(error))
        else:
            log.error("command %s failed", getattr(interaction.command, "qualified_name", "?"),
                      exc_info=original)
            await send_ephemeral(interaction, "Something went wrong on our side. Please try again "
                             "in a moment.")


class _RedactTokens(logging.Filter):
    """Masks interaction tokens, which discord.py's DEBUG logs print in webhook URLs and in
    received gateway events."""

    in_url = re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/\s?'\"]+")
    in_event = re.compile(r"""(['"]token['"]:\s*['"])[^'"]+""")

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        redacted = self.in_event.sub(r"\1***", self.in_url.sub(r"\1***", text))
        if redacted != text:
            record.msg, record.args = redacted, ()
        return True


def _redact_discord_logs() -> None:
    for name in ("discord.http", "discord.webhook.async_", "discord.gateway"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactTokens) for f in logger.filters):
            logger.addFilter(_RedactTokens())


async def _tell_privately(interaction: discord.Interaction[Any], text: str) -> None:
    """An ephemeral follow-up; a failure only costs the member this note, not the job."""
    try:
        await interaction.followup.send(text, ephemeral=True)
    except discord.HTTPException as exc:
        log.warning("could not send a private note: %s", exc.status)


async def _refuse(interaction: discord.Interaction[Any], text: str) -> None:
    """After a public defer: only the member sees why; the "thinking…" message goes away."""
    await interaction.delete_original_response()
    await interaction.followup.send(text, ephemeral=True)


def _pack(made: list[Job], limit: int) -> list[list[Job]]:
    """Tracks into messages: at most GROUP_PER_MESSAGE each, their files within ``limit``.

    Raises:
        DeliveryError: one track alone is over the upload limit (never fits; no retry).
    """
    chunks: list[list[Job]] = []
    size = 0
    for job in made:
        assert job.track is not None
        if job.track.size_bytes > limit:
            raise DeliveryError(f"the file of job #{job.id} ({_mib(job.track.size_bytes)}) is "
                                f"over this channel's upload limit ({_mib(limit)})",
                                retryable=False)
        full = bool(chunks) and (len(chunks[-1]) >= GROUP_PER_MESSAGE
                                 or size + job.track.size_bytes > limit)
        if not chunks or full:
            chunks.append([])
            size = 0
        chunks[-1].append(job)
        size += job.track.size_bytes
    return chunks


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def _as_int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _log_connection_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the Discord connection ended", exc_info=task.exception())
