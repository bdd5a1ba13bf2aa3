"""What each ``/music …`` sub-command does once parsed: one core call, one rendered answer.

Answers other than the job's public status message are ephemeral (only the member sees
them). Core errors propagate to the frontend's guard, which shows ``user_message``.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.core.limits import summary
from bot.core.models import Job, JobState
from bot.platforms import render
from bot.platforms.slack_blocks import SLACK, escape, mrkdwn
from bot.platforms.slack_parse import (
    HELP,
    AdminCommand,
    CancelCommand,
    Command,
    InfoCommand,
    MusicCommand,
    PriceCommand,
    TrackCommand,
    UsageError,
    parse_command,
)

if TYPE_CHECKING:
    from bot.platforms.slack_bot import SlackFrontend

DEFAULT_PRICE_DURATION = "10"


class CommandRunner:
    """Runs parsed ``/music`` commands for a :class:`SlackFrontend`."""

    def __init__(self, frontend: SlackFrontend) -> None:
        self.frontend = frontend
        self.service = frontend.service

    async def run(self, client: AsyncWebClient, body: dict[str, Any]) -> None:
        """Parse the command text and answer; malformed text gets the usage message."""
        try:
            command = parse_command(body.get("text", ""))
        except UsageError as err:
            # the message quotes the member's words; usage placeholders like <prompt> too
            await self.frontend.reply(client, body, escape(err.message))
            return
        await self._dispatch(client, body, command)

    async def _dispatch(self, client: AsyncWebClient, body: dict[str, Any],
                        command: Command) -> None:
        match command:
            case MusicCommand(request=request):
                await self._music(client, body, request)
            case InfoCommand(name="help"):
                limits = summary(self.service.config)
                await self.frontend.reply(client, body, escape(f"{HELP}\n{limits}"))
            case InfoCommand():
                await self._info(client, body, command)
            case CancelCommand(job_id=job_id):
                actor = await self.frontend.actor(client, body, check_admin=job_id is not None)
                job = await self.service.cancel(actor, job_id)
                await self.frontend.reply(client, body, cancel_text(job))
            case TrackCommand(job_id=job_id):
                # any member of the workspace may ask; errors reach the guard's private reply
                actor = await self.frontend.actor(client, body)
                job, track = await self.service.stored_track(actor, job_id)
                await self.frontend.resend(client, body, job, track)
            case PriceCommand(duration=duration, model=model):
                model = model or self.service.config.models.default
                seconds = duration or DEFAULT_PRICE_DURATION
                tokens = self.service.price(seconds, model)
                text = render.price_text(tokens, float(seconds), str(model))
                await self.frontend.reply(client, body, mrkdwn(text))
            case AdminCommand():
                await self._admin(client, body, command)

    async def _music(self, client: AsyncWebClient, body: dict[str, Any], request: Any) -> None:
        actor = await self.frontend.actor(client, body)
        receipt = await self.service.request_music(
            actor, request, self.frontend.destination(body), idempotency_key(body)
        )
        await self.frontend.announce(client, body, actor, receipt)

    async def _info(self, client: AsyncWebClient, body: dict[str, Any],
                    command: InfoCommand) -> None:
        actor = await self.frontend.actor(client, body, check_admin=command.member is not None)
        if command.name == "balance":
            balance = await self.service.balance(actor, command.member)
            whose = "Your" if command.member is None else f"<@{command.member}>'s"
            text = render.balance_text(balance, whose)
        elif command.name == "history":
            text = render.history_text(await self.service.history(actor), SLACK)
        else:
            text = render.queue_text(await self.service.queue(actor))
        await self.frontend.reply(client, body, mrkdwn(text))

    async def _admin(self, client: AsyncWebClient, body: dict[str, Any],
                     command: AdminCommand) -> None:
        # admin rights are vouched for here and enforced by the core
        admin = await self.frontend.actor(client, body, check_admin=True)
        if command.action == "ledger":
            entries = await self.service.ledger(admin, command.member)
            await self.frontend.reply(client, body, mrkdwn(render.ledger_text(entries, SLACK)))
            return
        balance = await self.service.adjust_balance(admin, command.action, command.member,
                                                    command.amount, command.reason)
        text = render.balance_text(balance, f"<@{command.member}>'s")
        await self.frontend.reply(client, body, mrkdwn(f"Done. {text}"))


def cancel_text(job: Job) -> str:
    """What a member sees after asking to cancel."""
    if job.state is JobState.CANCELLED:
        return f"🛑 Job #{job.id} cancelled. Refunded *{job.refunded}* tokens."
    return f"Stopping job #{job.id}… its tokens come back as soon as it stops."


def idempotency_key(body: dict[str, Any]) -> str:
    """``slack:<trigger_id>``: Slack retries carry the same trigger, so nothing is charged twice."""
    trigger = body.get("trigger_id")
    if trigger:
        return f"slack:{trigger}"
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    return f"slack:{digest[:40]}"
