"""Parse the text of a Slack ``/music`` command into a typed command.

Slack gives a slash command one free-text string, so this module is the Slack equivalent of
Discord's option schema. It is forgiving where a member cannot help it (quotes optional,
``--key=value`` or ``--key value``, the "—" that macOS autocorrects ``--`` into, curly
quotes, ``20s`` for a duration) and strict where a typo would change the meaning (unknown
flags, a flag without a value, an amount that is not a whole number): those raise
:class:`UsageError`, whose message includes the usage text. Values stay raw strings; the core
validates ranges and names (``bot.core.requests``). No Slack library is imported here.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from bot.core.models import MusicRequest

FLAGS: dict[str, str] = {
    "duration": "duration", "d": "duration", "seconds": "duration",
    "seed": "seed",
    "model": "model", "m": "model",
    "temperature": "temperature", "temp": "temperature",
    "top-k": "top_k", "top_k": "top_k", "topk": "top_k",
    "top-p": "top_p", "top_p": "top_p", "topp": "top_p",
    "cfg": "cfg", "cfg-coef": "cfg", "cfg_coef": "cfg",
    "genre": "genre",
    "tempo": "tempo", "bpm": "tempo",
    "format": "format",
}
"""Accepted flag spellings → :class:`MusicRequest` field."""

MUSIC_USAGE = """\
*Usage:* `/music <prompt> [--duration 20] [--seed 7] [--model medium] [--genre jazz] \
[--tempo 120] [--temperature 1.0] [--top-k 250] [--top-p 0] [--cfg 3] [--format mp3]`
Example: `/music calm lo-fi piano with rain --duration 15 --seed 7`"""

HELP = f"""\
{MUSIC_USAGE}
`/music balance` — your tokens · `/music history` — your recent tracks · \
`/music queue` — what is waiting
`/music cancel [job]` — stop a queued or running job (tokens come back) · \
`/music price [duration] [--model m]` — what a track costs
`/music track <job>` — post a finished track here again (numbers are in `/music history`)
Buttons on a track: *Re-roll* (same request, new seed), *Extend* (continue it), *Cancel*.
Admins: `/music admin grant|take|set @member amount [reason]`, `/music admin ledger [@member]`.
Failed renders are refunded automatically. The same seed gives a similar track, not an \
identical one on other hardware."""

TRACK_USAGE = """\
*Usage:* `/music track <job>` — send a finished track again, e.g. `/music track 12`"""

ADMIN_USAGE = """\
*Usage:* `/music admin grant|take|set @member amount [reason]` or \
`/music admin ledger [@member]`"""

_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'"})
_DASH_FLAG = re.compile(r"^(?:--|—|–)(?=\S)")
_MENTION = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$|^([UW][A-Z0-9]{2,})$")
_JOB_ID = re.compile(r"^#?(\d+)$")
_SECONDS = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds?)\s*", re.IGNORECASE)


class UsageError(ValueError):
    """The command text could not be understood; ``message`` is ready to show (mrkdwn)."""

    def __init__(self, problem: str, usage: str = MUSIC_USAGE) -> None:
        self.message = f"{problem}\n{usage}"
        super().__init__(self.message)


@dataclass(frozen=True)
class MusicCommand:
    """``/music <prompt> [--flags]``."""

    request: MusicRequest


@dataclass(frozen=True)
class InfoCommand:
    """``balance [@member]``, ``history``, ``queue`` or ``help``."""

    name: str
    member: str | None = None


@dataclass(frozen=True)
class CancelCommand:
    """``cancel [job]``; ``job_id`` None means the member's newest active job."""

    job_id: int | None = None


@dataclass(frozen=True)
class TrackCommand:
    """``track <job>``: upload a finished job's stored track again, here."""

    job_id: int


@dataclass(frozen=True)
class PriceCommand:
    """``price [duration] [--model m]``; raw values, validated by the core."""

    duration: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class AdminCommand:
    """``admin grant|take|set @member amount [reason]`` or ``admin ledger [@member]``."""

    action: str
    member: str | None = None
    amount: int | None = None
    reason: str = ""


Command = (MusicCommand | InfoCommand | CancelCommand | TrackCommand | PriceCommand
           | AdminCommand)


def parse_command(text: str) -> Command:
    """Turn the text after ``/music`` into a command.

    A first word that names a sub-command (``balance``, ``cancel``…) is a sub-command only
    when the rest fits its shape, so ``/music balance of light and dark`` is still a prompt.

    Raises:
        UsageError: empty text, unknown or valueless flag, bad admin arguments, ``track``
            without a job number.
    """
    words = split_words(text)
    if not words:
        raise UsageError("Tell me what to play.")
    head, rest = words[0].lower(), words[1:]
    if head == "admin" and rest and rest[0].lower() in ("grant", "take", "set", "ledger"):
        return _parse_admin(rest)
    command = _parse_subcommand(head, rest)
    return command if command is not None else MusicCommand(_parse_music(words))


def split_words(text: str) -> list[str]:
    """Split like a shell, but never fail: unbalanced quotes fall back to plain spaces."""
    text = (text or "").translate(_QUOTES).strip()
    try:
        return shlex.split(text)
    except ValueError:  # "No closing quotation": drop the stray quote rather than refuse
        return text.replace('"', " ").replace("'", " ").split()


def parse_member(word: str) -> str:
    """User id from ``<@U123|name>``, ``<@U123>`` or ``U123``.

    Raises:
        UsageError: a plain ``@name`` (Slack sends ids only when the command escapes users).
    """
    match = _MENTION.match(word.strip())
    if match is None:
        raise UsageError(
            f"`{word}` is not a member mention. Mention them with @ and pick the name Slack "
            "suggests (the app must have *Escape channels, users, and links* enabled).",
            ADMIN_USAGE,
        )
    return match.group(1) or match.group(2)


def _parse_subcommand(head: str, rest: list[str]) -> Command | None:
    if head in ("history", "queue", "help") and not rest:
        return InfoCommand(head)
    if head == "balance" and len(rest) <= 1:
        if not rest:
            return InfoCommand("balance")
        if _MENTION.match(rest[0]):
            return InfoCommand("balance", parse_member(rest[0]))
        return None
    if head == "cancel" and len(rest) <= 1:
        if not rest:
            return CancelCommand()
        match = _JOB_ID.match(rest[0])
        return CancelCommand(int(match.group(1))) if match else None
    if head == "track" and len(rest) <= 1:
        if not rest:
            raise UsageError("Which track? Give its job number.", TRACK_USAGE)
        match = _JOB_ID.match(rest[0])
        return TrackCommand(int(match.group(1))) if match else None  # "track one" is a prompt
    if head == "price":
        return _parse_price(rest)
    return None


def _parse_price(rest: list[str]) -> PriceCommand | None:
    positional, flags = _split_flags(rest, usage=MUSIC_USAGE)
    if len(positional) > 1 or set(flags) - {"duration", "model"}:
        return None  # "price of love --genre soul" is a prompt, not a price question
    duration = flags.get("duration") or (positional[0] if positional else None)
    if duration is not None and not _looks_numeric(_strip_seconds(duration)):
        return None
    return PriceCommand(
        duration=_strip_seconds(duration) if duration is not None else None,
        model=flags.get("model"),
    )


def _parse_music(words: list[str]) -> MusicRequest:
    positional, flags = _split_flags(words, usage=MUSIC_USAGE)
    prompt = " ".join(positional).strip()
    if not prompt:
        raise UsageError("The prompt is empty: describe the music before the options.")
    if "duration" in flags:
        flags["duration"] = _strip_seconds(flags["duration"])
    return MusicRequest(prompt=prompt, **flags)


def _split_flags(words: list[str], usage: str) -> tuple[list[str], dict[str, str]]:
    """Separate free words from ``--key value`` / ``--key=value`` options."""
    positional: list[str] = []
    flags: dict[str, str] = {}
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if not _DASH_FLAG.match(word):
            positional.append(word)
            continue
        name, eq, value = _DASH_FLAG.sub("", word).partition("=")
        field = FLAGS.get(name.lower())
        if field is None:
            raise UsageError(f"Unknown option `{word}`.", usage)
        if not eq:
            if index >= len(words) or _DASH_FLAG.match(words[index]):
                raise UsageError(f"Option `--{name}` needs a value.", usage)
            value = words[index]
            index += 1
        elif not value.strip():  # "--seed=" would silently mean "no seed"
            raise UsageError(f"Option `--{name}` needs a value.", usage)
        if field in flags:
            raise UsageError(f"Option `--{name}` was given twice.", usage)
        flags[field] = value
    return positional, flags


def _parse_admin(words: list[str]) -> AdminCommand:
    action, args = words[0].lower(), words[1:]
    if action == "ledger":
        if len(args) > 1:
            raise UsageError("`admin ledger` takes at most one member.", ADMIN_USAGE)
        return AdminCommand("ledger", parse_member(args[0]) if args else None)
    if len(args) < 2:
        raise UsageError(f"`admin {action}` needs a member and an amount.", ADMIN_USAGE)
    member = parse_member(args[0])
    amount_text = args[1].replace(",", "").replace("_", "")
    if not re.fullmatch(r"[+-]?\d+", amount_text):
        raise UsageError(f"`{args[1]}` is not a whole number of tokens.", ADMIN_USAGE)
    return AdminCommand(action, member, int(amount_text), " ".join(args[2:]))


def _strip_seconds(value: str) -> str:
    """``20s``/``20 sec`` → ``20``; anything else unchanged for the core to judge."""
    match = _SECONDS.fullmatch(value)
    return match.group(1) if match else value


def _looks_numeric(word: str) -> bool:
    return re.fullmatch(r"[+-]?\d+(?:\.\d+)?", word) is not None
