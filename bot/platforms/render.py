"""Texts shared by every frontend: receipts, progress bars, results, errors, help.

Plain text with light Markdown (``**bold**``, backticks) that Discord renders as is and the
Slack adapter converts with :func:`to_slack_mrkdwn`. Keeping the wording here makes the
platforms say the same thing.

Member text (prompt, genre, reasons, names, error details quoting input) always goes through
the platform's :class:`Dialect` ``escape`` so it arrives as inert text: a prompt ``@everyone``
or ``<!channel>`` must never notify anyone. Mentions we mean are built by ``mention``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.config import Config
from bot.core import catalogue
from bot.core.errors import format_wait
from bot.core.models import Job, JobEvent, JobState, LedgerEntry, QueueInfo, Receipt, Track
from bot.core.requests import price as price_of

NOISE_NOTE = "⚠️ Made with a random-initialised test model (`debug`): the audio is noise."


@dataclass(frozen=True)
class Dialect:
    """How one platform makes member text inert and names a member."""

    escape: Callable[[str], str]
    """Member text → text that renders literally and notifies no one."""
    mention: Callable[[str], str]
    """User id → how we name that member (a mention where the platform has them)."""


def _plain_mention(user: str) -> str:
    return user


PLAIN = Dialect(escape=str, mention=_plain_mention)
"""The console and CLIs: a terminal has nothing to notify, and ids read as ids."""


def progress_bar(fraction: float, width: int = 20) -> str:
    """``[████████░░░░░░░░░░░░] 40%`` for a fraction in 0..1."""
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    return f"[{'█' * filled}{'░' * (width - filled)}] {round(fraction * 100)}%"


def describe_request(job: Job, dialect: Dialect = PLAIN) -> str:
    """One line naming what was asked for (prompt and genre escaped: they are member text)."""
    p = job.params
    bits = [f"**{dialect.escape(p.prompt)}**", f"{p.duration:g} s", f"model `{p.model}`",
            f"seed {p.seed}"]
    if p.genre:
        bits.append(f"genre {dialect.escape(p.genre)}")
    if p.tempo:
        bits.append(f"{p.tempo} bpm")
    if p.format != "mp3":
        bits.append(p.format)
    if p.continue_from is not None:
        bits.append(f"continues #{p.continue_from}")
    return " · ".join(bits)


def eta_text(eta_s: float | None) -> str:
    return f" · ETA ~{format_wait(eta_s)}" if eta_s is not None else ""


def receipt_text(receipt: Receipt, dialect: Dialect = PLAIN) -> str:
    """First public reply after ``/music``: job, price and place in the queue.

    No balance: this message is seen by the whole channel; the balance goes only to the
    member (:func:`charged_text`).
    """
    job = receipt.job
    if receipt.duplicate:
        return f"Job #{job.id} was already requested ({job.state.value}); nothing charged again."
    place = "next in line" if receipt.position <= 1 else f"#{receipt.position} in the queue"
    return (
        f"🎵 Job #{job.id} queued — {place}{eta_text(receipt.eta_s)}\n"
        f"{describe_request(job, dialect)}\n"
        f"{clip_note(job)}"
        f"Charged **{receipt.price}** tokens"
    )


def clip_note(job: Job) -> str:
    """A line saying what an audio prompt does to the track (empty without one)."""
    seconds = f"{job.params.duration:g} s"
    if job.params.audio_prompt:
        return f"Continues your clip: the track is your clip, then {seconds} of new music.\n"
    if job.params.melody_prompt:
        return f"Follows the melody of your clip for {seconds}.\n"
    return ""


def charged_text(receipt: Receipt) -> str:
    """The private note to the member after a charge: what it cost and what is left."""
    return (f"Job #{receipt.job.id}: charged **{receipt.price}** tokens · "
            f"your balance is now **{receipt.balance}** tokens.")


def event_text(event: JobEvent, dialect: Dialect = PLAIN) -> str:
    """Status text for a job event (progress edits, failures, cancellations)."""
    job = event.job
    head = f"Job #{job.id} · {describe_request(job, dialect)}"
    match event.kind.value:
        case "queued" | "requeued":
            pos = f"#{event.position} in the queue" if event.position else "queued"
            return f"⏳ {head}\n{pos}{eta_text(event.eta_s)}"
        case "started":
            return f"🎛️ {head}\nGenerating… {progress_bar(0.0)}"
        case "progress":
            return f"🎛️ {head}\nGenerating… {progress_bar(event.progress)}{eta_text(event.eta_s)}"
        case "done":
            return f"✅ {head}\nDone."
        case "failed":
            return f"❌ {head}\n{failure_text(event, dialect)}"
        case "cancelled":
            return f"🛑 {head}\nCancelled. Refunded **{event.refunded}** tokens."
        case "undelivered":
            reason = dialect.escape((event.message or "the platform refused the upload")
                                    .rstrip("."))
            return (f"📦 {head}\nThe track was made but could not be delivered here: {reason}. "
                    f"Get it with `/track {job.id}` — it is kept for you, no tokens lost.")
    return head  # pragma: no cover - every kind is matched above


def failure_text(event: JobEvent, dialect: Dialect = PLAIN) -> str:
    """Why a job failed before its track existed (a made track that the platform refused
    is an ``undelivered`` event instead: the member fixes the channel, not the prompt)."""
    reason = dialect.escape((event.message or "the generation failed").rstrip("."))
    refund = f" Refunded **{event.refunded}** tokens." if event.refunded else ""
    return f"Generation failed: {reason}.{refund}"


def result_text(job: Job, track: Track, dialect: Dialect = PLAIN) -> str:
    """Message sent with the finished file (names the member; whether that pings them is
    the sender's choice of allowed mentions)."""
    lines = [
        f"🎶 Job #{job.id} for {dialect.mention(job.destination.user)}",
        describe_request(job, dialect),
        f"{track.duration_s:.1f} s · {track.format} · cost {job.price} tokens",
    ]
    if track.noise:
        lines.append(NOISE_NOTE)
    return "\n".join(lines)


def extend_label(config: Config, job: Job) -> str:
    """The Extend button's label on every platform: added seconds and what they cost."""
    seconds = config.limits.extend_seconds
    tokens = price_of(config, seconds, job.params.model, job.params.format)
    return f"⏩ Extend +{seconds:g} s · {tokens} tokens"


def balance_text(balance: int, whose: str = "Your") -> str:
    return f"{whose} balance: **{balance}** tokens."


def history_text(jobs: list[Job], dialect: Dialect = PLAIN) -> str:
    if not jobs:
        return "No tracks yet. Try `/music`."
    icons = {JobState.QUEUED: "⏳", JobState.RUNNING: "🎛️", JobState.DONE: "✅",
             JobState.FAILED: "❌", JobState.CANCELLED: "🛑"}
    lines = [
        f"{icons[j.state]} #{j.id} {j.state.value} · {j.price} tokens"
        f"{' (refunded)' if j.refunded else ''} · {describe_request(j, dialect)}"
        for j in jobs
    ]
    return "\n".join(lines)


def queue_text(info: QueueInfo) -> str:
    mine = "\n".join(f"#{job.id} {job.state.value} · position {pos}" for job, pos in info.mine)
    return (
        f"Queue: **{info.queued_total}** waiting, **{info.running_total}** generating"
        f"{eta_text(info.eta_s)}\n" + (mine or "You have no jobs in the queue.")
    )


def ledger_text(entries: list[LedgerEntry], dialect: Dialect = PLAIN) -> str:
    """Ledger lines; the reason and actor are admin-typed text, escaped like member text."""
    if not entries:
        return "The ledger is empty."
    return "\n".join(
        f"{e.id}. {e.kind.value} {e.delta:+d} → {e.balance_after} · "
        f"{dialect.mention(e.account.user)}"
        f"{f' · job #{e.job_id}' if e.job_id else ''} · by {dialect.escape(e.actor)}"
        f"{f' · {dialect.escape(e.reason)}' if e.reason else ''}"
        for e in entries
    )


def price_text(price: int, duration: float, model: str) -> str:
    return f"A {duration:g} s track with `{model}` costs **{price}** tokens."


HELP_FOOTER = """\
Buttons on a track: **Re-roll** (same request, new seed), **Extend** (continue it), **Cancel**.
Failed renders are refunded automatically. Same seed gives a similar track, not an identical one \
on other hardware."""


SLACK_CLIPS_HELP = ("Audio prompts: on a message with an audio file, use its shortcuts "
                    "**Continue this clip** or **Follow this melody**.")


def command_usage(command: catalogue.Command, files: bool = True) -> str:
    """``**/music** `prompt` `duration` `[model]`…``: a command and its options, Discord-style.

    ``files=False`` leaves out attachment options (Slack's slash commands carry no files)."""
    options = [o for o in command.options if files or o.kind is not catalogue.Kind.ATTACHMENT]
    words = [f"`{o.name}`" if o.required else f"`[{o.name}]`" for o in options]
    return " ".join([f"**/{command.qualified_name}**", *words])


def help_text(config: Config, frontend: str = "discord") -> str:
    """Every command ``frontend`` offers, generated from the catalogue, then the limits of
    every option from the core's table."""
    from bot.core.limits import summary

    lines = []
    for command in catalogue.COMMANDS:
        if command.on(frontend):
            admins = " (admins)" if command.access is catalogue.Access.ADMIN else ""
            usage = command_usage(command, files=frontend != "slack")
            lines.append(f"{usage} — {command.help}{admins}")
    if frontend == "slack":
        lines.append(SLACK_CLIPS_HELP)
    return "\n".join([*lines, HELP_FOOTER, summary(config)])


def to_slack_mrkdwn(text: str) -> str:
    """Convert the shared Markdown (``**bold**``) to Slack mrkdwn (``*bold*``)."""
    return text.replace("**", "*")
