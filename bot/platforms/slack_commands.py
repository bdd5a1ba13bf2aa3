"""What each ``/music …`` sub-command does once parsed: one core call, one rendered answer.

Answers other than the job's public status message are ephemeral (only the member sees
them). Core errors propagate to the frontend's guard, which shows ``user_message``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Config
from bot.core import catalogue
from bot.core.limits import summary
from bot.core.models import Actor, Destination, Job, JobState, MusicRequest, Receipt, Track
from bot.core.service import MusicService
from bot.platforms import render
from bot.platforms.apikey_command import apikey_answer
from bot.platforms.slack_blocks import SLACK, escape, mrkdwn
from bot.platforms.slack_parse import HELP, Parsed, UsageError, parse_command

Body = dict[str, Any]
Values = dict[str, Any]


class SlackHost(Protocol):
    """The Slack frontend as the command runner sees it (handed in: no import circle)."""

    config: Config
    service: MusicService

    async def actor(self, client: AsyncWebClient, body: Body, check_admin: bool = False) -> Actor:
        """Who typed the command; admin rights looked up only when asked."""

    def destination(self, body: Body) -> Destination:
        """Where a job's status and track go."""

    async def reply(self, client: AsyncWebClient, body: Body, text: str) -> None:
        """Answer the member privately."""

    async def announce(self, client: AsyncWebClient, body: Body, actor: Actor,
                       receipt: Receipt) -> None:
        """Post a queued job's status message."""

    async def resend(self, client: AsyncWebClient, body: Body, job: Job, track: Track) -> None:
        """Upload a stored track again here."""


class CommandRunner:
    """Runs parsed ``/music`` commands for a :class:`SlackHost`: one handler per catalogue
    command, each one core call and one rendered answer."""

    def __init__(self, frontend: SlackHost) -> None:
        self.frontend = frontend
        self.service = frontend.service

    async def run(self, client: AsyncWebClient, body: Body) -> None:
        """Parse the command text and answer; malformed text gets the usage message."""
        try:
            parsed = parse_command(body.get("text", ""))
        except UsageError as err:
            # the message quotes the member's words; usage placeholders like <prompt> too
            await self.frontend.reply(client, body, escape(err.message))
            return
        entry = catalogue.command(parsed.command)
        # admin rights are vouched for here (and enforced by the core) when the command or
        # a given option may act on someone else's account or job
        admin = entry.access is catalogue.Access.ADMIN or any(
            o.others and o.name in parsed.values for o in entry.options)
        actor = await self.frontend.actor(client, body, check_admin=admin)
        handler = getattr(self, "_" + parsed.command.replace(" ", "_"))
        await handler(client, body, actor, parsed.values)

    async def _answer(self, client: AsyncWebClient, body: Body, text: str) -> None:
        await self.frontend.reply(client, body, mrkdwn(text))

    async def _music(self, client: AsyncWebClient, body: Body, actor: Actor,
                     values: Values) -> None:
        receipt = await self.service.request_music(
            actor, Parsed("music", values).request, self.frontend.destination(body),
            idempotency_key(body))
        await self.frontend.announce(client, body, actor, receipt)

    async def _batch(self, client: AsyncWebClient, body: Body, actor: Actor,
                     values: Values) -> None:
        options = dict(values)
        prompts = options.pop("prompts")
        receipt = await self.service.request_batch(
            actor, prompts, MusicRequest(prompt="", **options), self.frontend.destination(body),
            idempotency_key(body))
        await self.frontend.announce(client, body, actor, receipt)

    async def _help(self, client: AsyncWebClient, body: Body, actor: Actor,
                    values: Values) -> None:
        limits = summary(self.service.config)
        await self.frontend.reply(client, body, escape(f"{HELP}\n{limits}"))

    async def _balance(self, client: AsyncWebClient, body: Body, actor: Actor,
                       values: Values) -> None:
        member = values.get("member")
        balance = await self.service.balance(actor, member)
        await self._answer(client, body, render.balance_text(
            balance, "Your" if member is None else f"<@{member}>'s"))

    async def _history(self, client: AsyncWebClient, body: Body, actor: Actor,
                       values: Values) -> None:
        await self._answer(client, body,
                           render.history_text(await self.service.history(actor), SLACK))

    async def _queue(self, client: AsyncWebClient, body: Body, actor: Actor,
                     values: Values) -> None:
        await self._answer(client, body, render.queue_text(await self.service.queue(actor)))

    async def _cancel(self, client: AsyncWebClient, body: Body, actor: Actor,
                      values: Values) -> None:
        job = await self.service.cancel(actor, values.get("job"))
        await self.frontend.reply(client, body, cancel_text(job))

    async def _track(self, client: AsyncWebClient, body: Body, actor: Actor,
                     values: Values) -> None:
        # any member of the workspace may ask; errors reach the guard's private reply
        job, track = await self.service.stored_track(actor, values["job"])
        await self.frontend.resend(client, body, job, track)

    async def _share(self, client: AsyncWebClient, body: Body, actor: Actor,
                     values: Values) -> None:
        job = await self.service.sharing.share(actor, values["job"])
        await self._answer(client, body, render.shared_text(self.frontend.config, job, "slack"))

    async def _unshare(self, client: AsyncWebClient, body: Body, actor: Actor,
                       values: Values) -> None:
        job = await self.service.sharing.unshare(actor, values["job"])
        await self._answer(client, body, render.unshared_text(job))
    async def _stems(self, client: AsyncWebClient, body: Body, actor: Actor,
                     values: Values) -> None:
        receipt = await self.service.stems(actor, values["job"],
                                           self.frontend.destination(body), idempotency_key(body))
        await self.frontend.announce(client, body, actor, receipt)

    async def _price(self, client: AsyncWebClient, body: Body, actor: Actor,
                     values: Values) -> None:
        model = values.get("model") or self.service.config.models.default
        tokens = self.service.price(values["duration"], model, values.get("format"))
        await self._answer(client, body,
                           render.price_text(tokens, float(values["duration"]), str(model)))

    async def _adjust(self, client: AsyncWebClient, body: Body, actor: Actor, action: str,
                      values: Values) -> None:
        member = values["member"]
        balance = await self.service.adjust_balance(actor, action, member, values["amount"],
                                                    values.get("reason", ""))
        text = render.balance_text(balance, f"<@{member}>'s")
        await self._answer(client, body, f"Done. {text}")

    async def _tokens_grant(self, client: AsyncWebClient, body: Body, actor: Actor,
                            values: Values) -> None:
        await self._adjust(client, body, actor, "grant", values)

    async def _tokens_take(self, client: AsyncWebClient, body: Body, actor: Actor,
                           values: Values) -> None:
        await self._adjust(client, body, actor, "take", values)

    async def _tokens_set(self, client: AsyncWebClient, body: Body, actor: Actor,
                          values: Values) -> None:
        await self._adjust(client, body, actor, "set", values)

    async def _tokens_ledger(self, client: AsyncWebClient, body: Body, actor: Actor,
                             values: Values) -> None:
        entries = await self.service.ledger(actor, values.get("member"))
        await self._answer(client, body, render.ledger_text(entries, SLACK))


    async def _apikey(self, client: AsyncWebClient, body: Body, actor: Actor,
                      values: Values) -> None:
        if str(values.get("action", "")).lower() == "create":
            # the key keeps the rights its member has now: look admin rights up for it
            actor = await self.frontend.actor(client, body, check_admin=True)
        text = await apikey_answer(self.service.apikeys, actor, values.get("action"),
                                   values.get("label"), values.get("key"),
                                   values.get("member"))
        await self._answer(client, body, text)


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
