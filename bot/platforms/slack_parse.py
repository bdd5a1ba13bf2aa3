"""Parse the text of a Slack ``/music`` command into a typed command.

Slack gives a slash command one free-text string, so this module is the Slack equivalent of
Discord's option schema. It is forgiving where a member cannot help it (quotes optional,
``--key=value`` or ``--key value``, the "—" that macOS autocorrects ``--`` into, curly
quotes, ``20s`` for a duration) and strict where a typo would change the meaning (unknown
flags, a flag without a value, an amount that is not a whole number): those raise
:class:`UsageError`, whose message includes the usage text. Values stay raw strings; the core
validates ranges and names (``bot.core.requests``). No Slack library is imported here.

Flags, sub-commands, their shapes and every usage and help text are generated from the
command catalogue (:mod:`bot.core.catalogue`); the admin group is spelled ``admin`` here.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from bot.core import catalogue
from bot.core.catalogue import Kind, Option
from bot.core.models import MusicRequest
from bot.platforms.render import HELP_FOOTER, SLACK_CLIPS_HELP, to_slack_mrkdwn

PLATFORM = "slack"
MUSIC = catalogue.command("music")
FLAGS: dict[str, str] = {s: o.name for o in MUSIC.options if not o.rest for s in o.spellings
                         if o.kind is not Kind.ATTACHMENT}  # files come by message shortcut
"""Accepted flag spellings → :class:`MusicRequest` field."""
ADMIN_WORD = catalogue.TOKENS.aliases[0]
"""Slack's name for the ``tokens`` group (``admin``): its commands hang off ``/music``."""


def _flag(option: Option) -> str:
    return f"--{option.flag} {option.example}"


def usage_of(entry: catalogue.Command) -> str:
    """``/music track <job>``: one command in Slack syntax, generated from the catalogue."""
    words = ["/music"] if entry.name == "music" else ["/music", entry.name]
    if entry.group:
        words = ["/music", ADMIN_WORD, entry.name]
    for option in entry.options:
        if option.kind is Kind.ATTACHMENT:
            continue  # no files in slash commands: message shortcuts instead (see HELP)
        shown = f"@{option.name}" if option.kind is Kind.MEMBER else option.name
        if option.positional:
            words.append(f"<{shown}>" if option.required else f"[{shown}]")
        else:
            words.append(_flag(option) if option.required else f"[{_flag(option)}]")
    return " ".join(words)


BATCH = catalogue.command("batch")
BATCH_USAGE = (f"*Usage:* `{usage_of(BATCH)}`\n"
               "One prompt per line (or ` | ` between prompts); the options apply to all.")
MUSIC_USAGE = (f"*Usage:* `{usage_of(MUSIC)}`\n"
               "Example: `/music calm lo-fi piano with rain --duration 15 --seed 7`")
ADMIN_USAGE = "*Usage:* " + " or ".join(
    f"`{usage_of(c)}`" for c in catalogue.commands_for(PLATFORM, catalogue.TOKENS.name))


def _help() -> str:
    lines = [MUSIC_USAGE]
    for entry in catalogue.COMMANDS:
        if entry.on(PLATFORM) and entry.name != "music":
            admins = " (admins)" if entry.access is catalogue.Access.ADMIN else ""
            lines.append(f"`{usage_of(entry)}` — {entry.help}{admins}")
    return "\n".join([*lines, to_slack_mrkdwn(SLACK_CLIPS_HELP), to_slack_mrkdwn(HELP_FOOTER)])


HELP = _help()

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
class Parsed:
    """A catalogue command (``music``, ``balance``, ``tokens grant``…) and its raw values."""

    command: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def request(self) -> MusicRequest:
        """The values of a ``music`` command as the core's request."""
        return MusicRequest(**self.values)


def parse_command(text: str) -> Parsed:
    """Turn the text after ``/music`` into a command.

    A first word that names a sub-command (``balance``, ``cancel``…) is a sub-command only
    when the rest fits its shape, so ``/music balance of light and dark`` is still a prompt.

    Raises:
        UsageError: empty text, unknown or valueless flag, bad admin arguments, a
            sub-command without a value it needs (``track``, ``price``).
    """
    words = split_words(text)
    if not words:
        raise UsageError("Tell me what to play.")
    head, rest = words[0].lower(), words[1:]
    if head == BATCH.name:
        return Parsed(BATCH.name, parse_batch(text.strip()[len(BATCH.name):]))
    admin = {c.name: c for c in catalogue.commands_for(PLATFORM, catalogue.TOKENS.name)}
    if head == ADMIN_WORD and rest and rest[0].lower() in admin:
        entry = admin[rest[0].lower()]
        return Parsed(entry.qualified_name, _parse_admin(entry, rest[1:]))
    named = next((c for c in catalogue.commands_for(PLATFORM) if c.name == head), None)
    parsed = _parse_subcommand(named, rest) if named and named is not MUSIC else None
    return parsed if parsed is not None else Parsed("music", _parse_music(words))


def parse_batch(text: str) -> dict[str, Any]:
    """``/music batch``: one prompt per line (or `` | `` between prompts), and flags for the
    whole batch on any line. Lines are split before words, since shell splitting would
    join them. The core counts and validates the prompts.

    Raises:
        UsageError: a flag the batch does not take, repeated, or without a value.
    """
    prompts: list[str] = []
    values: dict[str, Any] = {}
    allowed = {o.name for o in BATCH.options}
    for line in text.splitlines():
        positional, flags = _split_flags(split_words(line), usage=BATCH_USAGE)
        for name, value in flags.items():
            if name not in allowed:
                raise UsageError(f"`batch` does not take `--{name}`.", BATCH_USAGE)
            if name in values:
                raise UsageError(f"Option `--{name}` was given twice.", BATCH_USAGE)
            values[name] = _strip_seconds(value) if name == "duration" else value
        if positional:
            prompts.append(" ".join(positional))
    if not prompts:
        raise UsageError("`batch` needs prompts, one per line.", BATCH_USAGE)
    if "duration" not in values:
        raise UsageError("`batch` needs a duration.", BATCH_USAGE)
    return {"prompts": "\n".join(prompts), **values}


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


def _parse_subcommand(entry: catalogue.Command, rest: list[str]) -> Parsed | None:
    """The sub-command, or None when the words do not fit its shape (then they are a prompt)."""
    own = {s: o.name for o in entry.options if not (o.rest or o.positional)
           for s in o.spellings}  # e.g. /music apikey create --label build
    positional, flags = _split_flags(rest, usage=MUSIC_USAGE, known={**FLAGS, **own})
    if set(flags) - {o.name for o in entry.options}:
        return None  # "price of love --genre soul" is a prompt, not a price question
    values: dict[str, Any] = {
        name: parse_member(value) if entry.option(name).kind is Kind.MEMBER else value
        for name, value in flags.items()}
    free = [o for o in entry.positionals if o.name not in values]
    if len(positional) > len(free):
        return None  # "cancel culture anthem"
    for option, word in zip(free, positional, strict=False):
        value = _fit(option, word)
        if value is None:
            return None  # "track twelve"
        values[option.name] = value
    if "duration" in values:
        values["duration"] = _strip_seconds(values["duration"])
    missing = [o for o in entry.options if o.required and o.name not in values]
    if missing:
        raise UsageError(f"`{entry.name}` needs {_nouns(missing)}.",
                         f"*Usage:* `{usage_of(entry)}`")
    return Parsed(entry.qualified_name, values)


def _fit(option: Option, word: str) -> Any:
    """``word`` as a value of ``option`` when it has the option's shape, else None."""
    if option.kind is Kind.MEMBER:
        return parse_member(word) if _MENTION.match(word) else None
    if option.kind is Kind.JOB:
        match = _JOB_ID.match(word)
        return int(match.group(1)) if match else None
    if option.kind in (Kind.NUMBER, Kind.INTEGER):
        return word if _looks_numeric(_strip_seconds(word)) else None
    return word


def _nouns(options: list[Option]) -> str:
    """``a member and an amount``, ``a job number``."""
    names = {"job": "job number"}
    words = [names.get(o.name, o.name) for o in options]
    return " and ".join(f"{'an' if w[0] in 'aeiou' else 'a'} {w}" for w in words)


def _parse_music(words: list[str]) -> dict[str, Any]:
    positional, flags = _split_flags(words, usage=MUSIC_USAGE)
    prompt = " ".join(positional).strip()
    if not prompt:
        raise UsageError("The prompt is empty: describe the music before the options.")
    if "duration" in flags:
        flags["duration"] = _strip_seconds(flags["duration"])
    return {"prompt": prompt, **flags}


def _split_flags(words: list[str], usage: str,
                 known: dict[str, str] = FLAGS) -> tuple[list[str], dict[str, str]]:
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
        field = known.get(name.lower())
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


def _parse_admin(entry: catalogue.Command, words: list[str]) -> dict[str, Any]:
    """Admin words are never a prompt: anything that does not fit is explained."""
    name = f"{ADMIN_WORD} {entry.name}"
    options = entry.positionals
    required = [o for o in options if o.required]
    if len(words) < len(required):
        raise UsageError(f"`{name}` needs {_nouns(required)}.", ADMIN_USAGE)
    if len(words) > len(options) and not options[-1].rest:
        raise UsageError(f"`{name}` takes at most one {options[-1].name}."
                         if len(options) == 1 else f"`{name}` takes too many words.",
                         ADMIN_USAGE)
    values: dict[str, Any] = {}
    for index, option in enumerate(options):
        if index < len(words):
            values[option.name] = _admin_value(option, words[index:] if option.rest
                                               else [words[index]])
    return values


def _admin_value(option: Option, words: list[str]) -> Any:
    if option.kind is Kind.MEMBER:
        return parse_member(words[0])
    if option.kind is Kind.INTEGER:
        text = words[0].replace(",", "").replace("_", "")
        if not re.fullmatch(r"[+-]?\d+", text):
            raise UsageError(f"`{words[0]}` is not a whole number.", ADMIN_USAGE)
        return int(text)
    return " ".join(words)


def _strip_seconds(value: str) -> str:
    """``20s``/``20 sec`` → ``20``; anything else unchanged for the core to judge."""
    match = _SECONDS.fullmatch(value)
    return match.group(1) if match else value


def _looks_numeric(word: str) -> bool:
    return re.fullmatch(r"[+-]?\d+(?:\.\d+)?", word) is not None
