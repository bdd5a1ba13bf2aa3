"""Slack frontend: ``/music`` in any channel, buttons on tracks, an App Home tab.

A thin slack-bolt adapter over :class:`~bot.core.service.MusicService`: every handler acks
first (Slack wants an answer within 3 s), parses with :mod:`bot.platforms.slack_parse`,
calls the core and renders the result. Money, limits and permissions live in the core; this
module only vouches for who is a workspace admin. Runs in Socket Mode (default, needs no
public URL) or HTTP mode (an aiohttp server whose requests bolt verifies with the signing
secret). Tokens are read from ``config.secrets`` and never logged.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import log_redaction
from bot.config import Config
from bot.core.errors import ConfigError, MusicBotError
from bot.core.models import (
    Actor,
    Destination,
    EventKind,
    Job,
    JobEvent,
    JobState,
    Receipt,
    Track,
)
from bot.core.service import MusicService
from bot.platforms import render
from bot.platforms.slack_api import (
    INVITE_HINT,
    NETWORK_ERRORS,
    error_code,
    post_in_channel,
    reply_privately,
    upload_group,
    upload_track,
)
from bot.platforms.slack_blocks import (
    ACTION_PATTERN,
    SLACK,
    escape,
    group_result_blocks,
    home_view,
    mrkdwn,
    parse_action_id,
    result_blocks,
    status_blocks,
)
from bot.platforms.slack_commands import CommandRunner, cancel_text, idempotency_key

log = logging.getLogger(__name__)

SLACK_GROUP_FILES = 10
"""Tracks per group message: Slack's upload completes at most 10 files in one message."""

HTTP_PATH = "/slack/events"
"""Request URL path for slash commands, interactivity and events in HTTP mode."""
RESPONSE_URL_TTL_S = 30 * 60
UPLOAD_LIMIT = 1024**3
"""Slack accepts files up to 1 GB; the encoder never needs to shrink a track for Slack."""
ADMIN_CACHE_S = 300.0


class SlackFrontend:
    """The Slack adapter; implements :class:`bot.core.ports.Frontend`.

    ``base_url`` points the Web API client elsewhere (tests use a fake Slack on 127.0.0.1);
    ``clock`` drives progress throttling and response_url expiry.
    """

    platform = "slack"

    def __init__(
        self,
        config: Config,
        service: MusicService,
        *,
        base_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.service = service
        self._clock = clock
        self._mode = config.slack.mode
        bot_token, self._app_token, signing_secret = _tokens(config)
        client = AsyncWebClient(token=bot_token, base_url=base_url or "https://slack.com/api/")
        # Before bolt creates its loggers: every record they make meets the redaction filter.
        log_redaction.install()
        self.app = AsyncApp(
            # bolt names its listener loggers after the app; under slack_bolt they are
            # recognised as outside libraries whose bodies are stripped from the log
            name="slack_bolt.musicbot",
            client=client,
            signing_secret=signing_secret or "",
            # Socket Mode traffic is authenticated by the app token, not signed
            request_verification_enabled=self._mode == "http",
        )
        self.commands = CommandRunner(self)
        self._last_edit: dict[int, float] = {}
        self._status_ts: dict[int, str] = {}
        self._quiet: set[int] = set()
        """Jobs whose upload failed here: a later failure is a delivery failure."""
        self._admins: dict[str, tuple[bool, float]] = {}
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None
        self.http_port: int | None = None
        """The port actually bound in HTTP mode (useful when configured as 0)."""
        self._register()

    # ------------------------------------------------------------------ lifecycle

    def _register(self) -> None:
        self.app.command("/music")(self._on_command)
        self.app.action(ACTION_PATTERN)(self._on_button)
        self.app.event("app_home_opened")(self._on_home_opened)
        self.app.error(self._on_error)
        from bot.platforms import slack_clips  # message shortcuts for audio prompts

        slack_clips.register(self)

    async def start(self) -> None:
        """Connect: open the Socket Mode websocket, or listen for signed HTTP requests."""
        log_redaction.install()  # again: handlers added since construction (new log setup)
        await self._check_token("SLACK_BOT_TOKEN", self.app.client.auth_test())
        if self._mode == "socket":
            assert self._app_token is not None
            wss_url = await self._check_token(
                "SLACK_APP_TOKEN", self.app.client.apps_connections_open(app_token=self._app_token)
            )
            self._socket = AsyncSocketModeHandler(self.app, app_token=self._app_token)
            self._socket.client.wss_uri = str(wss_url["url"])
            await self._socket.connect_async()
            log.info("Slack frontend connected in Socket Mode")
            return
        server = web.Application()
        server.router.add_post(HTTP_PATH, self._handle_http)
        self._runner = web.AppRunner(server, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.slack.http_host, self.config.slack.http_port)
        await site.start()
        self.http_port = self._runner.addresses[0][1]
        log.info("Slack frontend listening on %s:%s%s", self.config.slack.http_host,
                 self.http_port, HTTP_PATH)

    @staticmethod
    async def _check_token(name: str, call: Awaitable[Any]) -> Any:
        """Fail fast on a rejected token: slack_sdk's Socket Mode client would retry forever."""
        try:
            return await call
        except SlackApiError as err:
            raise ConfigError(name, f"Slack rejected it ({error_code(err)})") from None
        except NETWORK_ERRORS as err:
            raise ConfigError(name, f"Slack could not be reached ({type(err).__name__})") from None

    async def stop(self) -> None:
        """Disconnect; jobs stay queued in the database and are delivered after a restart."""
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle_http(self, request: web.Request) -> web.Response:
        # bolt checks X-Slack-Signature and the timestamp, answering 401 on a mismatch
        response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(response)

    # ------------------------------------------------------------------ handlers

    async def _on_command(self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any],
                          client: AsyncWebClient) -> None:
        await ack()
        await self._guarded(client, body, self.commands.run(client, body))

    async def _on_button(self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any],
                         action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        parsed = parse_action_id(action.get("action_id", ""))
        if parsed is not None:
            await self._guarded(client, body, self._button(client, body, *parsed))

    async def _guarded(self, client: AsyncWebClient, body: dict[str, Any],
                       work: Awaitable[None]) -> None:
        """Run a handler; a core error becomes a private answer, anything else @app.error.

        Core messages can quote what the member typed, so they are escaped like member text.
        """
        try:
            await work
        except MusicBotError as err:
            await self.reply(client, body, mrkdwn(escape(err.user_message)))

    async def _button(self, client: AsyncWebClient, body: dict[str, Any], verb: str,
                      job_id: int) -> None:
        if verb == "cancel":
            actor = await self.actor(client, body, check_admin=True)
            await self.reply(client, body, cancel_text(await self.service.cancel(actor, job_id)))
            return
        actor = await self.actor(client, body)
        destination = self.destination(body)
        key = idempotency_key(body)
        if verb == "reroll":
            receipt = await self.service.reroll(actor, job_id, destination, key)
        elif verb == "stems":
            receipt = await self.service.stems(actor, job_id, destination, key)
        else:
            receipt = await self.service.extend(
                actor, job_id, self.config.limits.extend_seconds, destination, key
            )
        await self.announce(client, body, actor, receipt)

    async def _on_home_opened(self, event: dict[str, Any], body: dict[str, Any],
                              client: AsyncWebClient) -> None:
        if event.get("tab", "home") != "home":
            return
        actor = Actor(self.platform, body.get("team_id", ""), event["user"])
        view = home_view(
            await self.service.balance(actor),
            await self.service.queue(actor),
            await self.service.history(actor, limit=5),
        )
        await client.views_publish(user_id=actor.user, view=view)

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        """The one place unexpected handler failures end up: log, apologise privately."""
        log.error("Slack handler failed: %s", type(error).__name__, exc_info=error)
        if isinstance(body, dict) and _channel(body) and _user(body):
            await self.reply(self.app.client, body,
                             "Something went wrong on my side. Tokens charged for a track that "
                             "is not delivered come back automatically.")

    # ------------------------------------------------------------------ helpers used by commands

    async def actor(self, client: AsyncWebClient, body: dict[str, Any],
                    check_admin: bool = False) -> Actor:
        """Who clicked or typed; ``is_admin`` only looked up when the action needs it."""
        user = _user(body)
        admin = await self.is_admin(client, user) if check_admin else False
        name = body.get("user_name") or body.get("user", {}).get("username", "")
        return Actor(self.platform, _team(body), user, is_admin=admin, display_name=name)

    async def is_admin(self, client: AsyncWebClient, user: str) -> bool:
        """Workspace owners/admins (users.info) and ids in ``slack.admins``; cached briefly."""
        if user in self.config.slack.admins:
            return True
        cached = self._admins.get(user)
        now = self._clock()
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            info = (await client.users_info(user=user))["user"]
        except SlackApiError as err:
            log.warning("users.info failed for %s: %s", user, error_code(err))
            return False
        admin = bool(info.get("is_admin") or info.get("is_owner") or info.get("is_primary_owner"))
        self._admins[user] = (admin, now + ADMIN_CACHE_S)
        return admin

    def destination(self, body: dict[str, Any]) -> Destination:
        """Where the job's status and track go: this channel (and thread, for buttons)."""
        response_url = body.get("response_url")
        container = body.get("container") or {}
        return Destination(
            platform=self.platform, community=_team(body), channel=_channel(body),
            user=_user(body), thread=container.get("thread_ts"),
            interaction_token=response_url,
            token_expires_at=self._clock() + RESPONSE_URL_TTL_S if response_url else None,
            upload_limit=UPLOAD_LIMIT,
        )

    async def reply(self, client: AsyncWebClient, body: dict[str, Any], text: str) -> None:
        """Answer the member privately in the channel they used."""
        await reply_privately(client, text, channel=_channel(body), user=_user(body),
                              response_url=body.get("response_url"))

    async def announce(self, client: AsyncWebClient, body: dict[str, Any], actor: Actor,
                       receipt: Receipt) -> None:
        """Post the job's status message in the channel, or undo the charge if we cannot.

        The channel sees the job and its price; the balance goes only to the member.
        """
        job = receipt.job
        text = mrkdwn(render.receipt_text(receipt, SLACK))
        if receipt.duplicate:
            await self.reply(client, body, text)
            return
        self._last_edit[job.id] = self._clock()
        try:
            ts = await post_in_channel(client, job.destination.channel, text=text,
                                       blocks=status_blocks(text, job.id, active=True),
                                       thread_ts=job.destination.thread)
        except SlackApiError as err:
            log.info("cannot post in %s (%s): cancelling job %d", job.destination.channel,
                     error_code(err), job.id)
            await self._undo(client, body, actor, job)
            return
        self._status_ts[job.id] = ts
        await self.reply(client, body, mrkdwn(render.charged_text(receipt)))
        await self.service.set_status_ref(job.id, ts)
        await self._catch_up(job.id)

    async def resend(self, client: AsyncWebClient, body: dict[str, Any], job: Job,
                     track: Track) -> None:
        """Upload a stored track again where ``/music track`` was typed (history re-send).

        The message still names the job's owner; only the channel/thread change.

        Raises:
            DeliveryError: Slack refused the upload (shown privately by the guard).
        """
        here = self.destination(body)
        moved = dataclasses.replace(job.destination, channel=here.channel, thread=here.thread)
        job = dataclasses.replace(job, destination=moved)
        await upload_track(client, job, track, self._result_blocks(job, track))

    async def _undo(self, client: AsyncWebClient, body: dict[str, Any], actor: Actor,
                    job: Job) -> None:
        # the track could never be delivered here: refund now instead of after generating
        self._quiet.add(job.id)
        cancelled = await self.service.cancel(actor, job.id)
        refund = cancelled.refunded or job.price
        await self.reply(client, body, f"{INVITE_HINT}. Your {refund} tokens were refunded.")

    async def _catch_up(self, job_id: int) -> None:
        """A job can finish before its status ts is stored; then show the final state now."""
        job = await self.service.get_job(job_id)
        if job.state.terminal:
            kind = {JobState.DONE: EventKind.DONE, JobState.FAILED: EventKind.FAILED,
                    JobState.CANCELLED: EventKind.CANCELLED}[job.state]
            await self.notify(JobEvent(kind, job, refunded=job.refunded,
                                       message=job.error or ""))

    # ------------------------------------------------------------------ Frontend port

    async def notify(self, event: JobEvent) -> None:
        """Edit the job's status message; progress edits are throttled per job."""
        job = event.job
        terminal = event.kind in (EventKind.DONE, EventKind.FAILED, EventKind.CANCELLED,
                                  EventKind.UNDELIVERED)
        if job.group_id is not None and job.id != job.group_id:
            return  # a group has one status message, driven by its first job
        if not terminal and not self._edit_due(job.id):
            return
        text = mrkdwn(render.event_text(event, SLACK))
        ts = job.destination.status_ref or self._status_ts.get(job.id)
        quiet = job.id in self._quiet  # the member was already told (see _undo)
        if terminal:
            self._forget(job.id)
        if ts is None:
            if terminal and event.kind is not EventKind.DONE and not quiet:
                await self._tell_owner(job, text)
            return
        await self.app.client.chat_update(
            channel=job.destination.channel, ts=ts, text=text,
            blocks=status_blocks(text, job.id, active=not terminal),
        )

    async def deliver(self, job: Job, track: Track) -> None:
        """Upload the track into the job's channel/thread with Re-roll and Extend buttons.

        Raises:
            DeliveryError: Slack refused or could not be reached (retryable when it may pass).
        """
        await upload_track(self.app.client, job, track, self._result_blocks(job, track))

    async def deliver_group(self, made: list[Job], failed: list[Job]) -> None:
        """A group's tracks, :data:`SLACK_GROUP_FILES` per message, each with Re-roll and
        Extend.

        Raises:
            DeliveryError: Slack refused or could not be reached (the group is retried whole).
        """
        for start in range(0, len(made), SLACK_GROUP_FILES):
            chunk = made[start:start + SLACK_GROUP_FILES]
            labels = [render.extend_label(self.config, job) for job in chunk]
            blocks = group_result_blocks(chunk, failed if start == 0 else [], labels)
            await upload_group(self.app.client, chunk, blocks)

    def _result_blocks(self, job: Job, track: Track) -> list[dict[str, Any]]:
        stems = render.stems_label(self.config, job) if self.config.models.stems else None
        return result_blocks(job, track, render.extend_label(self.config, job),
                             render.page_line(self.config, job, "slack"), stems)

    def _edit_due(self, job_id: int) -> bool:
        now = self._clock()
        last = self._last_edit.get(job_id)
        if last is not None and now - last < self.config.slack.progress_edit_interval_s:
            return False
        self._last_edit[job_id] = now
        return True

    def _forget(self, job_id: int) -> None:
        self._last_edit.pop(job_id, None)
        self._status_ts.pop(job_id, None)
        self._quiet.discard(job_id)

    async def _tell_owner(self, job: Job, text: str) -> None:
        dest = job.destination
        fresh = dest.token_expires_at is not None and dest.token_expires_at > self._clock()
        await reply_privately(self.app.client, text, channel=dest.channel, user=dest.user,
                              response_url=dest.interaction_token if fresh else None)


def _tokens(config: Config) -> tuple[str, str | None, str | None]:
    secrets, mode = config.secrets, config.slack.mode
    if secrets.slack_bot_token is None:
        raise ConfigError("SLACK_BOT_TOKEN", "is not set (the bot token, xoxb-…)")
    if mode == "socket" and secrets.slack_app_token is None:
        raise ConfigError("SLACK_APP_TOKEN", "Socket Mode needs an app-level token (xapp-…) "
                          "with the connections:write scope")
    if mode == "http" and secrets.slack_signing_secret is None:
        raise ConfigError("SLACK_SIGNING_SECRET", "HTTP mode needs the app's signing secret")
    app = secrets.slack_app_token.reveal() if secrets.slack_app_token else None
    signing = secrets.slack_signing_secret.reveal() if secrets.slack_signing_secret else None
    return secrets.slack_bot_token.reveal(), app, signing


def _team(body: dict[str, Any]) -> str:
    team = body.get("team_id") or (body.get("team") or {}).get("id")
    return str(team or (body.get("user") or {}).get("team_id") or "")


def _channel(body: dict[str, Any]) -> str:
    return str(body.get("channel_id") or (body.get("channel") or {}).get("id") or "")


def _user(body: dict[str, Any]) -> str:
    user = body.get("user_id") or body.get("user")
    return str(user.get("id", "") if isinstance(user, dict) else user or "")
