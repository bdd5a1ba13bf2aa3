"""Block Kit for the Slack frontend: status messages, delivered tracks, the App Home tab.

Pure functions from core data to Slack JSON; the wording comes from :mod:`bot.platforms.render`
so Slack and Discord say the same thing. Button action ids carry the job id
(``musicbot_reroll:42``) so a click needs no server-side state to find its job.
"""

from __future__ import annotations

import re
from typing import Any

from bot.core.models import Job, QueueInfo, Track
from bot.platforms import render

ACTION_PREFIX = "musicbot_"
ACTION_PATTERN = re.compile(r"^musicbot_(reroll|extend|cancel|stems):(\d+)$")
"""Matches the action ids of every button this frontend renders."""

_SECTION_LIMIT = 3000  # Slack rejects section text longer than this


def mrkdwn(text: str) -> str:
    """Shared Markdown → Slack mrkdwn."""
    return render.to_slack_mrkdwn(text)


def escape(text: str) -> str:
    """Member text as literal Slack text (Slack's mrkdwn escaping: ``&``, ``<``, ``>``).

    Slack only turns ``<!channel>``, ``<@U…>``, ``<#C…>``, ``<!subteam^…>`` into
    notifications when they arrive unescaped (we never send ``link_names``, so a bare
    ``@channel`` is plain text too).
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mention(user: str) -> str:
    return f"<@{user}>"


SLACK = render.Dialect(escape=escape, mention=_mention)
"""How render texts name members and neutralise member text on Slack."""


def action_id(verb: str, job_id: int) -> str:
    return f"{ACTION_PREFIX}{verb}:{job_id}"


def parse_action_id(value: str) -> tuple[str, int] | None:
    """``musicbot_extend:7`` → ``("extend", 7)``; None for anything else."""
    match = ACTION_PATTERN.match(value)
    return (match.group(1), int(match.group(2))) if match else None


def section(text: str) -> dict[str, Any]:
    if len(text) > _SECTION_LIMIT:
        text = text[: _SECTION_LIMIT - 1] + "…"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def button(label: str, verb: str, job_id: int, style: str | None = None) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label, "emoji": True},
        "action_id": action_id(verb, job_id),
        "value": str(job_id),
    }
    if style:
        element["style"] = style
    return element


def status_blocks(text: str, job_id: int, active: bool) -> list[dict[str, Any]]:
    """A job's status message; a Cancel button while the job can still be stopped."""
    blocks = [section(text)]
    if active:
        blocks.append({
            "type": "actions",
            "block_id": f"status:{job_id}",
            "elements": [button("Cancel", "cancel", job_id, style="danger")],
        })
    return blocks


def result_blocks(job: Job, track: Track, extend_label: str,
                  link: str = "", stems_label: str | None = None) -> list[dict[str, Any]]:
    """The message shared with a finished track: what it is, plus Re-roll and Extend
    (``extend_label`` from :func:`render.extend_label`, the same as on Discord) and Stems
    when ``stems_label`` (:func:`render.stems_label`) is given; ``link`` is its
    :func:`render.page_line`."""
    if track.stems:
        return stems_blocks(job, track)
    blocks = [
        section(mrkdwn(render.result_text(job, track, SLACK, link))),
        {
            "type": "actions",
            "block_id": f"result:{job.id}",
            "elements": [
                button("🎲 Re-roll", "reroll", job.id, style="primary"),
                button(extend_label, "extend", job.id),
            ],
        },
    ]
    if stems_label is not None:
        blocks[-1]["elements"].append(button(stems_label, "stems", job.id))
    return blocks


def stems_blocks(job: Job, track: Track) -> list[dict[str, Any]]:
    """The message shared with a stems job's zip: which stems, no buttons (a stems job has
    nothing to re-roll or extend)."""
    return [section(mrkdwn(render.stems_result_text(job, track, SLACK)))]


def group_result_blocks(made: list[Job], failed: list[Job],
                        extend_labels: list[str]) -> list[dict[str, Any]]:
    """The one message with a group's tracks: the shared text (failed jobs named with their
    refunds), then a row of Re-roll / Extend per track, labelled with its job number."""
    blocks = [section(mrkdwn(render.group_result_text(made, failed, SLACK)))]
    for job, label in zip(made, extend_labels, strict=True):
        blocks.append({
            "type": "actions",
            "block_id": f"result:{job.id}",
            "elements": [
                button(f"🎲 Re-roll #{job.id}", "reroll", job.id, style="primary"),
                button(f"#{job.id} {label}", "extend", job.id),
            ],
        })
    return blocks


def home_view(balance: int, queue: QueueInfo, jobs: list[Job]) -> dict[str, Any]:
    """The App Home tab: balance, queue and recent tracks."""
    return {
        "type": "home",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "🎵 MusicBot"}},
            section(mrkdwn(render.balance_text(balance))),
            {"type": "divider"},
            section(mrkdwn(render.queue_text(queue))),
            {"type": "divider"},
            {"type": "header", "text": {"type": "plain_text", "text": "Recent tracks"}},
            section(mrkdwn(render.history_text(jobs, SLACK))),
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": "Type `/music help` in any channel."}],
            },
        ],
    }
