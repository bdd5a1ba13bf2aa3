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
from bot.core.apikeys import ApiKey, NewKey
from bot.core.errors import format_wait
from bot.core.models import Job, JobEvent, JobState, LedgerEntry, QueueInfo, Receipt, Track
from bot.core.requests import price as price_of
from bot.core.sharing import page_url
from bot.core.stems import stems_price

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
    if receipt.duplicate and job.kind == "stems":
        return stems_receipt_text(receipt)
    if receipt.duplicate:
        return f"Job #{job.id} was already requested ({job.state.value}); nothing charged again."
    if receipt.group:
        return group_receipt_text(receipt, dialect)
    place = "next in line" if receipt.position <= 1 else f"#{receipt.position} in the queue"
    return (
        f"🎵 Job #{job.id} queued — {place}{eta_text(receipt.eta_s)}\n"
        f"{describe_request(job, dialect)}\n"
        f"{clip_note(job)}"
        f"Charged **{receipt.price}** tokens"
    )


def group_receipt_text(receipt: Receipt, dialect: Dialect = PLAIN) -> str:
    """The public reply to a request of several jobs (takes, a batch): one line per job."""
    group = receipt.group
    place = "next in line" if receipt.position <= 1 else f"#{receipt.position} in the queue"
    lines = [f"🎵 {len(group)} jobs queued together (#{group[0].id}–#{group[-1].id}) — "
             f"{place}{eta_text(receipt.eta_s)}"]
    lines += [f"{n}. Job #{job.id} · {describe_request(job, dialect)}"
              for n, job in enumerate(group, start=1)]
    lines.append(f"Charged **{receipt.price}** tokens in all; they arrive in one message.")
    return "\n".join(lines)


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


def result_text(job: Job, track: Track, dialect: Dialect = PLAIN, link: str = "") -> str:
    """Message sent with the finished file (names the member; whether that pings them is
    the sender's choice of allowed mentions). ``link``: the :func:`page_line`, if any."""
    lines = [
        f"🎶 Job #{job.id} for {dialect.mention(job.destination.user)}",
        describe_request(job, dialect),
        f"{track.duration_s:.1f} s · {track.format} · cost {job.price} tokens"
        + "".join(f" · {fact}" for fact in track_facts(track)),
    ]
    if track.noise:
        lines.append(NOISE_NOTE)
    if link:
        lines.append(link)
    return "\n".join(lines)


# ------------------------------------------------------------------ track pages (sharing)

def share_command(frontend: str, job_id: int, verb: str = "share") -> str:
    """How a member types ``/share`` (or ``unshare``) for ``job_id`` on ``frontend``."""
    if frontend == "discord":
        return f"`/{verb} job:{job_id}`"
    if frontend == "slack":
        return f"`/music {verb} {job_id}`"
    return f"`/{verb} {job_id}`"


def _link(url: str, frontend: str) -> str:
    # <url>: a link on Slack, and on Discord a link without a preview card (which would make
    # Discord's crawler fetch the page).
    return f"<{url}>" if frontend in ("discord", "slack") else url


def page_line(config: Config, job: Job, frontend: str) -> str:
    """The finished-track message's line about its page: the link when the track is shared,
    else how to share it. Empty when ``api.public_base_url`` is not set (no page to link)."""
    if not config.api.public_base_url:
        return ""
    url = page_url(config, job)
    if url:
        return f"🔗 Track page: {_link(url, frontend)}"
    return f"🔗 Want a page to share it on? {share_command(frontend, job.id)}"


def shared_text(config: Config, job: Job, frontend: str) -> str:
    """Answer to ``/share``: the page link (or where it lives without a public URL)."""
    url = page_url(config, job)
    if url:
        where = _link(url, frontend)
    elif config.api.enabled:
        where = f"`/t/{job.share_id}` on this bot's web address (ask the operator for it)"
    else:
        where = (f"`/t/{job.share_id}`, once the operator turns the web server on "
                 "(`api.enabled`)")
    return (f"🔗 Job #{job.id} is shared: {where}\nAnyone with the link can listen and "
            f"download it; {share_command(frontend, job.id, 'unshare')} makes it private again.")


def unshared_text(job: Job) -> str:
    """Answer to ``/unshare``."""
    return f"🔒 Job #{job.id} is private again: its page link no longer works."


def track_facts(track: Track) -> list[str]:
    """What the worker measured: estimated tempo and key, BS.1770 loudness (if known)."""
    facts = []
    if track.tempo_bpm is not None:
        facts.append(f"~{track.tempo_bpm:.0f} BPM (estimated)")
    if track.key:
        facts.append(f"{track.key} (estimated)")
    if track.loudness_lufs is not None:
        facts.append(f"{track.loudness_lufs:.1f} LUFS")
    return facts


def group_result_text(made: list[Job], failed: list[Job], dialect: Dialect = PLAIN) -> str:
    """The one message that brings a group's tracks: a line per track (in the order of the
    attached files), then every job that failed, with its refund."""
    first = (made or failed)[0]
    lines = [f"🎶 {len(made)} of {len(made) + len(failed)} tracks for "
             f"{dialect.mention(first.destination.user)}"]
    for n, job in enumerate(made, start=1):
        track = job.track
        assert track is not None
        facts = "".join(f" · {fact}" for fact in track_facts(track))
        lines.append(f"{n}. Job #{job.id} · {describe_request(job, dialect)} · "
                     f"{track.duration_s:.1f} s{facts}")
    for job in failed:
        reason = dialect.escape((job.error or "the generation failed").rstrip("."))
        lines.append(f"❌ Job #{job.id} (seed {job.params.seed}) failed: {reason}. "
                     f"Refunded **{job.refunded}** tokens.")
    if any(job.track is not None and job.track.noise for job in made):
        lines.append(NOISE_NOTE)
    return "\n".join(lines)


def extend_label(config: Config, job: Job) -> str:
    """The Extend button's label on every platform: added seconds and what they cost."""
    seconds = config.limits.extend_seconds
    tokens = price_of(config, seconds, job.params.model, job.params.format)
    return f"⏩ Extend +{seconds:g} s · {tokens} tokens"


def stems_label(config: Config, job: Job) -> str:
    """The Stems button's label on every platform: what splitting this track costs."""
    seconds = job.track.duration_s if job.track is not None else job.params.duration
    return f"🎚️ Stems · {stems_price(config, seconds)} tokens"


def stems_result_text(job: Job, track: Track, dialect: Dialect = PLAIN,
                      left_out: tuple[str, ...] = ()) -> str:
    """Message sent with a stems job's files (the zip, or the stems one by one)."""
    lines = [
        f"🎚️ Job #{job.id}: stems of #{job.source_job_id} for "
        f"{dialect.mention(job.destination.user)}",
        f"{', '.join(track.stems or {})} · {track.duration_s:.1f} s · cost {job.price} tokens",
    ]
    if left_out:
        lines.append(f"{', '.join(left_out)} did not fit this channel's upload limit (the "
                     "files stay stored on the bot).")
    if track.noise:
        lines.append(NOISE_NOTE)
    return "\n".join(lines)


def stems_receipt_text(receipt: Receipt) -> str:
    """Reply to a stems request that found the stems already queued or made."""
    job = receipt.job
    if job.state in (JobState.RENDERED, JobState.DONE):
        return (f"Stems of #{job.source_job_id} were already made as job #{job.id}: get them "
                f"with `/track {job.id}`. Nothing charged.")
    return (f"Stems of #{job.source_job_id} are already on the way as job #{job.id} "
            f"({job.state.value}). Nothing charged.")


def balance_text(balance: int, whose: str = "Your") -> str:
    return f"{whose} balance: **{balance}** tokens."


def history_text(jobs: list[Job], dialect: Dialect = PLAIN) -> str:
    if not jobs:
        return "No tracks yet. Try `/music`."
    icons = {JobState.QUEUED: "⏳", JobState.RUNNING: "🎛️", JobState.RENDERED: "📦",
             JobState.DONE: "✅",
             JobState.FAILED: "❌", JobState.CANCELLED: "🛑"}
    lines = [
        f"{icons[j.state]} #{j.id} {j.state.value} · {j.price} tokens"
        f"{' (refunded)' if j.refunded else ''} · {describe_request(j, dialect)}"
        + "".join(f" · {fact}" for fact in (track_facts(j.track) if j.track else []))
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
Buttons on a track: **Re-roll** (same request, new seed), **Extend** (continue it), **Stems** \
(drums, bass, other, vocals as a zip), **Cancel**.
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


# --------------------------------------------------------------------- HTTP API keys


def apikey_created_text(made: NewKey) -> str:
    """A new key and its webhook secret: shown once, privately (never stored in clear)."""
    label = f" ({made.key.label})" if made.key.label else ""
    return (f"API key #{made.key.id}{label} — copy it now, it is shown only once:\n"
            f"`{made.secret}`\n"
            f"Webhook signing secret: `{made.webhook_secret}`\n"
            "Use it as 'Authorization: Bearer <key>'. Revoke with /apikey revoke key:"
            f"{made.key.id}.")


def apikey_list_text(keys: list[ApiKey]) -> str:
    """One line per key: number, public prefix, label, state (never the secret)."""
    if not keys:
        return "No API keys yet. Make one with /apikey create."
    lines = []
    for key in keys:
        state = "revoked" if key.revoked else (
            "never used" if key.last_used_at is None else "in use")
        admin = " · admin" if key.is_admin else ""
        lines.append(f"#{key.id} `mb_{key.prefix}_…` {key.label or '(no label)'} · "
                     f"{state}{admin}")
    return "\n".join(lines)


def apikey_revoked_text(keys: list[ApiKey]) -> str:
    """Which keys stopped working."""
    numbers = ", ".join(f"#{key.id}" for key in keys)
    return f"Revoked API key{'s' if len(keys) > 1 else ''} {numbers}: they no longer work."
