"""Posting and editing on Discord from a stored :class:`Destination` (no live interaction).

While the interaction token is valid the bot answers through the interaction's webhook
(works everywhere the command worked, no channel permission needed). After it expires
(15 minutes, a long queue can outlive it) it posts a normal message in the channel that
mentions the member, or a DM when the command came from a DM. Discord errors become
:class:`DeliveryError`, retryable when waiting may help (429, 5xx, network).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import discord

from bot.core.errors import DeliveryError
from bot.core.models import Destination, Job, Track
from bot.platforms.render import Dialect

log = logging.getLogger(__name__)

NO_PINGS = discord.AllowedMentions.none()
"""The client's default: nothing we post notifies anyone unless a call says otherwise."""
ALREADY_ACKNOWLEDGED = 40060
"""Discord's code for "Interaction has already been acknowledged" (a re-delivered event)."""


def escape_member_text(text: str) -> str:
    """Member text as inert Discord text: Markdown escaped, and every ``@`` broken by a
    zero-width space so ``@everyone``, ``@here``, ``<@id>`` and ``<@&role>`` read as text
    even if a message were ever sent with mentions allowed."""
    return discord.utils.escape_markdown(text).replace("@", "@\u200b")


def _mention(user: str) -> str:
    return f"<@{user}>"


DISCORD = Dialect(escape=escape_member_text, mention=_mention)
"""How render texts name members and neutralise member text on Discord."""


def ping_only(user: str) -> discord.AllowedMentions:
    """Allowed mentions that let exactly this member be notified (and no one else)."""
    return discord.AllowedMentions(everyone=False, roles=False, replied_user=False,
                                   users=[discord.Object(int(user))])


def already_acknowledged(exc: BaseException) -> bool:
    """True for a re-delivered interaction someone (another process, a retry) answered."""
    if isinstance(exc, discord.InteractionResponded):
        return True
    return isinstance(exc, discord.HTTPException) and exc.code == ALREADY_ACKNOWLEDGED


def http_reason(exc: discord.HTTPException) -> str:
    """A Discord refusal as a sentence a member can act on (shown with the refund)."""
    if exc.status == 403:
        return ("I can't post files in this channel — ask an admin to give me the Attach Files "
                "and Send Messages permissions here")
    if exc.status == 413:
        return "the file is too large for this channel's upload limit"
    if exc.status == 404:
        return "this channel or conversation no longer exists"
    if exc.status == 429:
        return "Discord is rate-limiting uploads right now; please try again in a minute"
    if exc.status >= 500:
        return "Discord had a problem on its side; please try again in a minute"
    return f"Discord refused the upload (HTTP {exc.status})"


class Sender:
    """Sends as the bot through ``client`` (which must be logged in)."""

    def __init__(self, client: discord.Client, clock: Callable[[], float]) -> None:
        self._client = client
        self._clock = clock

    def token_valid(self, dest: Destination) -> bool:
        return bool(dest.interaction_token and dest.token_expires_at
                    and self._clock() < dest.token_expires_at)

    def _webhook(self, dest: Destination) -> discord.Webhook:
        app_id = dest.extra.get("application_id") or self._client.application_id
        assert dest.interaction_token is not None and app_id is not None
        return discord.Webhook.partial(int(app_id), dest.interaction_token, client=self._client)

    async def edit(self, dest: Destination, message_id: int, text: str,
                   view: discord.ui.View | None) -> None:
        """Edit a status message: through the webhook while it lives, else as the bot."""
        if self.token_valid(dest):
            try:
                await self._webhook(dest).edit_message(message_id, content=text, view=view,
                                                        allowed_mentions=NO_PINGS)
                return
            except (discord.NotFound, discord.Forbidden):
                pass  # token revoked early: the bot may still edit its own message
        channel = self._client.get_partial_messageable(int(dest.channel))
        await channel.get_partial_message(message_id).edit(content=text, view=view,
                                                           allowed_mentions=NO_PINGS)

    async def deliver(self, job: Job, track: Track, text: str, view: discord.ui.View) -> None:
        """Upload ``track`` with ``text`` and ``view`` to the job's destination.

        Raises:
            DeliveryError: Discord refused the upload or could not be reached.
        """
        dest = job.destination
        if not Path(track.path).is_file():
            raise DeliveryError("the track file is missing", retryable=False)
        try:
            if self.token_valid(dest):
                try:
                    with _files(job, track, dest.upload_limit) as files:
                        await self._webhook(dest).send(text, files=files, view=view, wait=True,
                                                       allowed_mentions=NO_PINGS)
                    return
                except (discord.NotFound, discord.Forbidden):
                    log.info("interaction token of job %d no longer works; posting instead",
                             job.id)
            await self._post(dest, job, track, text, view)
        except discord.HTTPException as exc:
            log.info("Discord refused the track of job %d: %s %s", job.id, exc.status, exc.code)
            retryable = exc.status == 429 or exc.status >= 500
            raise DeliveryError(http_reason(exc), retryable=retryable) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(f"Discord could not be reached ({type(exc).__name__})") from None

    async def deliver_many(self, group: list[Job], text: str, view: discord.ui.View) -> None:
        """Upload several rendered jobs' tracks (no waveforms) in one message, like
        :meth:`deliver`: through the first job's interaction webhook while it lives, else
        in the channel (pinging only the member) or by DM.

        Raises:
            DeliveryError: Discord refused the upload or could not be reached.
        """
        dest = group[0].destination
        if any(job.track is None or not Path(job.track.path).is_file() for job in group):
            raise DeliveryError("a track file is missing", retryable=False)
        try:
            if self.token_valid(dest):
                try:
                    with _group_files(group) as files:
                        await self._webhook(dest).send(text, files=files, view=view, wait=True,
                                                       allowed_mentions=NO_PINGS)
                    return
                except (discord.NotFound, discord.Forbidden):
                    log.info("interaction token of job %d no longer works; posting instead",
                             group[0].id)
            channel, mentions = await self._fallback(dest)
            with _group_files(group) as files:
                await channel.send(text, files=files, view=view, allowed_mentions=mentions)
        except discord.HTTPException as exc:
            log.info("Discord refused the tracks of group %d: %s %s", group[0].id, exc.status,
                     exc.code)
            retryable = exc.status == 429 or exc.status >= 500
            raise DeliveryError(http_reason(exc), retryable=retryable) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(f"Discord could not be reached ({type(exc).__name__})") from None

    async def _fallback(
        self, dest: Destination
    ) -> tuple[discord.abc.Messageable, discord.AllowedMentions]:
        """Where to post after the token expired, and whom that may ping (see :meth:`_post`)."""
        if dest.extra.get("dm"):
            return await self._client.create_dm(discord.Object(int(dest.user))), NO_PINGS
        return self._client.get_partial_messageable(int(dest.channel)), ping_only(dest.user)

    async def _post(self, dest: Destination, job: Job, track: Track, text: str,
                    view: discord.ui.View) -> None:
        """After expiry: in the channel (mentioning the member, in ``text``) or by DM.

        The channel post is the one place we ping: the member gets no interaction follow-up
        there, so the mention is how they learn the track is ready. Only they are pinged.
        """
        if dest.extra.get("dm"):
            channel: discord.abc.Messageable = await self._client.create_dm(
                discord.Object(int(dest.user)))
            mentions = NO_PINGS
        else:
            channel = self._client.get_partial_messageable(int(dest.channel))
            mentions = ping_only(dest.user)
        with _files(job, track, dest.upload_limit) as files:
            await channel.send(text, files=files, view=view, allowed_mentions=mentions)


async def followup_track(interaction: discord.Interaction[Any], job: Job, track: Track,
                         text: str, view: discord.ui.View) -> None:
    """Upload ``track`` as a public follow-up of ``interaction`` (``/track``, a re-send).

    The caller checks the size against ``interaction.filesize_limit``; the waveform is
    left out when both files would not fit. Mentions in ``text`` do not ping anyone again.
    """
    with _files(job, track, interaction.filesize_limit) as files:
        await interaction.followup.send(text, files=files, view=view, wait=True,
                                        allowed_mentions=NO_PINGS)


@contextlib.contextmanager
def _files(job: Job, track: Track, limit: int) -> Iterator[list[discord.File]]:
    """Fresh attachments for one request (a File is consumed by sending it); ``limit`` is
    the upload limit where they go."""
    if track.stems:
        files = _stem_files(job, track, limit)
        try:
            yield files
        finally:
            for file in files:
                file.close()
        return
    files = [discord.File(track.path, filename=f"musicbot-{job.id}.{track.format}")]
    waveform = Path(track.waveform_path) if track.waveform_path else None
    # The waveform is a nicety: leave it out rather than risk the upload limit.
    if waveform and waveform.is_file() and (
        track.size_bytes + waveform.stat().st_size <= limit
    ):
        files.append(discord.File(waveform, filename=f"musicbot-{job.id}-waveform.png"))
    try:
        yield files
    finally:
        for file in files:
            file.close()


def stems_that_fit(track: Track, limit: int) -> list[str]:
    """What a stems job sends on Discord: its zip when that fits ``limit``, else as many
    single stems as fit together (each stem was encoded to fit the limit alone)."""
    if track.size_bytes <= limit or not track.stems:
        return [track.path]
    chosen: list[str] = []
    used = 0
    for path in track.stems.values():
        size = Path(path).stat().st_size if Path(path).is_file() else limit + 1
        if used + size <= limit:
            chosen.append(path)
            used += size
    return chosen


def stems_left_out(track: Track, limit: int) -> tuple[str, ...]:
    """Names of the stems :func:`stems_that_fit` leaves out (shown in the message)."""
    sent = set(stems_that_fit(track, limit))
    if track.path in sent:
        return ()
    return tuple(name for name, path in (track.stems or {}).items() if path not in sent)


def _stem_files(job: Job, track: Track, limit: int) -> list[discord.File]:
    paths = stems_that_fit(track, limit)
    if not paths:
        raise DeliveryError("not even one stem fits this channel's upload limit",
                            retryable=False)
    return [discord.File(path, filename=f"musicbot-{job.id}-{Path(path).name.split('.', 1)[1]}"
                         if path != track.path else f"musicbot-{job.id}-stems.zip")
            for path in paths]


@contextlib.contextmanager
def _group_files(group: list[Job]) -> Iterator[list[discord.File]]:
    """The tracks of a group's jobs as fresh attachments, in the order the text lists them."""
    files = [discord.File(job.track.path, filename=f"musicbot-{job.id}.{job.track.format}")
             for job in group if job.track is not None]
    try:
        yield files
    finally:
        for file in files:
            file.close()
