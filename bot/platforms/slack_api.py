"""Slack Web API calls the frontend makes, with Slack's failures turned into core errors.

Kept apart from the bolt handlers so each function does one platform thing: post in a
channel (joining public channels on ``not_in_channel``), upload a finished track with
``files_upload_v2``, answer a member privately. Every Slack failure that means "the member
did not get the track" becomes :class:`~bot.core.errors.DeliveryError`, retryable only when
waiting can help (rate limits, Slack's own 5xx, network).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.core.errors import DeliveryError
from bot.core.models import Job, Track

log = logging.getLogger(__name__)

INVITE_HINT = "I am not a member of this channel: invite me with `/invite @musicbot` and try again"
RETRYABLE_ERRORS = frozenset({
    "ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
    "request_timeout",
})
NOT_MEMBER_ERRORS = frozenset({"not_in_channel", "channel_not_found"})
NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)


def error_code(err: SlackApiError) -> str:
    """Slack's error name (``not_in_channel``…) from an API exception."""
    data = err.response.data if err.response is not None else None
    return str(data.get("error", "unknown_error")) if isinstance(data, dict) else "unknown_error"


async def join_channel(client: AsyncWebClient, channel: str) -> bool:
    """Join a public channel so we may post and upload there; False when Slack refuses.

    Private channels (``method_not_supported_for_channel_type``) need a member to
    ``/invite`` the bot; that is the only fix, so the caller tells the member.
    """
    try:
        await client.conversations_join(channel=channel)
    except SlackApiError as err:
        log.info("cannot join channel %s: %s", channel, error_code(err))
        return False
    return True


async def post_in_channel(client: AsyncWebClient, channel: str, **message: Any) -> str:
    """chat.postMessage, joining the channel once on ``not_in_channel``; returns the ts.

    Raises:
        SlackApiError: the message could not be posted (not a member, archived…).
    """
    try:
        response = await client.chat_postMessage(channel=channel, **message)
    except SlackApiError as err:
        if error_code(err) != "not_in_channel" or not await join_channel(client, channel):
            raise
        response = await client.chat_postMessage(channel=channel, **message)
    return str(response["ts"])


async def reply_privately(
    client: AsyncWebClient, text: str, *, channel: str, user: str,
    response_url: str | None = None,
) -> None:
    """An ephemeral answer: through ``response_url`` when we have one, else chat.postEphemeral.

    response_url needs no channel membership (it works in channels the bot was never
    invited to) but allows only 5 uses in 30 minutes, hence the fallback.
    """
    if response_url:
        try:
            webhook = AsyncWebhookClient(response_url)
            result = await webhook.send(
                text=text, response_type="ephemeral", replace_original=False
            )
            if result.status_code == 200:
                return
            log.info("response_url refused the reply (status %s)", result.status_code)
        except NETWORK_ERRORS:
            log.info("response_url unreachable, falling back to chat.postEphemeral")
    try:
        await client.chat_postEphemeral(channel=channel, user=user, text=text)
    except SlackApiError as err:
        log.warning("could not answer %s privately: %s", user, error_code(err))


async def upload_track(
    client: AsyncWebClient, job: Job, track: Track, blocks: list[dict[str, Any]]
) -> None:
    """Share the track (and its waveform picture, if any) where the job asked.

    files_upload_v2 runs files.getUploadURLExternal → POST of the bytes →
    files.completeUploadExternal. Raises DeliveryError when the member did not get it.
    """
    try:
        await _upload_joining(client, job, track, blocks)
    except SlackApiError as err:
        raise delivery_error(err) from None
    except SlackRequestError as err:  # the raw upload POST was refused
        raise DeliveryError(f"Slack refused the upload ({err})", retryable=True) from None
    except NETWORK_ERRORS as err:
        raise DeliveryError(f"Slack could not be reached ({type(err).__name__})") from None


async def _upload_joining(
    client: AsyncWebClient, job: Job, track: Track, blocks: list[dict[str, Any]]
) -> None:
    try:
        await _upload(client, job, track, blocks)
    except SlackApiError as err:
        channel = job.destination.channel
        if error_code(err) != "not_in_channel" or not await join_channel(client, channel):
            raise
        await _upload(client, job, track, blocks)


async def upload_group(
    client: AsyncWebClient, group: list[Job], blocks: list[dict[str, Any]]
) -> None:
    """Share several rendered jobs' tracks in one message (no waveforms), like
    :func:`upload_track`. Raises DeliveryError when the member did not get them."""
    try:
        try:
            await _upload_many(client, group, blocks)
        except SlackApiError as err:
            channel = group[0].destination.channel
            if error_code(err) != "not_in_channel" or not await join_channel(client, channel):
                raise
            await _upload_many(client, group, blocks)
    except SlackApiError as err:
        raise delivery_error(err) from None
    except SlackRequestError as err:
        raise DeliveryError(f"Slack refused the upload ({err})", retryable=True) from None
    except NETWORK_ERRORS as err:
        raise DeliveryError(f"Slack could not be reached ({type(err).__name__})") from None


async def _upload_many(
    client: AsyncWebClient, group: list[Job], blocks: list[dict[str, Any]]
) -> None:
    files = []
    for job in group:
        track = job.track
        if track is None or not Path(track.path).is_file():
            raise DeliveryError("a finished file is missing on the server", retryable=False)
        files.append({"file": track.path, "filename": f"musicbot-{job.id}.{track.format}",
                      "title": f"{job.params.prompt[:80]} (#{job.id})"})
    dest = group[0].destination
    await client.files_upload_v2(file_uploads=files, channel=dest.channel,
                                 thread_ts=dest.thread, blocks=json.dumps(blocks))


async def _upload(
    client: AsyncWebClient, job: Job, track: Track, blocks: list[dict[str, Any]]
) -> None:
    path = Path(track.path)
    if not path.is_file():
        raise DeliveryError("the finished file is missing on the server", retryable=False)
    files = [{
        "file": str(path),
        "filename": f"musicbot-{job.id}.{track.format}",
        "title": f"{job.params.prompt[:80]} (#{job.id})",
    }]
    if track.waveform_path and Path(track.waveform_path).is_file():
        files.append({
            "file": track.waveform_path,
            "filename": f"musicbot-{job.id}-waveform.png",
            "title": f"Waveform of #{job.id}",
        })
    dest = job.destination
    # blocks travel as a JSON string: completeUploadExternal takes form parameters
    await client.files_upload_v2(
        file_uploads=files, channel=dest.channel, thread_ts=dest.thread,
        blocks=json.dumps(blocks),
    )


def delivery_error(err: SlackApiError) -> DeliveryError:
    """Map a Slack API failure to a DeliveryError the core understands."""
    code = error_code(err)
    status = err.response.status_code if err.response is not None else 0
    if code in NOT_MEMBER_ERRORS:
        return DeliveryError(INVITE_HINT, retryable=False)
    retryable = code in RETRYABLE_ERRORS or status == 429 or status >= 500
    return DeliveryError(f"Slack answered `{code}`", retryable=retryable)
