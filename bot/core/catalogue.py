"""The command catalogue: every command and option, declared once.

Pure data, no I/O, no chat imports. Discord's app commands, the Slack parser and its help,
the console and ``musicbot generate`` are generated from :data:`COMMANDS`, so a new option is
one :class:`Option` here and every frontend has it, with the same name, limits, choices and
help. Bounds come from the core's one limits table (:mod:`bot.core.limits`); options whose
bounds depend on the configuration (duration, prompt) resolve them with :meth:`Option.bounds`.
Values still travel raw: :mod:`bot.core.requests` validates them, so the catalogue describes
what the core accepts and never decides it on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import Enum

from bot.config import Config
from bot.core import limits as table
from bot.core.limits import NumberLimit, TextLimit


class Kind(Enum):
    """What an option's value is, which decides how each frontend asks for it."""

    TEXT = "text"
    NUMBER = "number"
    INTEGER = "integer"
    CHOICE = "choice"
    MODEL = "model"
    """A model key from the config (Discord offers the loaded ones by autocomplete)."""
    MEMBER = "member"
    """Someone in the community: a Discord user, a Slack mention, a console id."""
    JOB = "job"
    ATTACHMENT = "attachment"
    """An uploaded file: a Discord attachment, a file path in the console and the CLI (Slack
    slash commands carry no files: it has message shortcuts instead)."""


class Access(Enum):
    """Who may use a command. The core enforces it; frontends only hide or label."""

    MEMBER = "member"
    ADMIN = "admin"


Limit = NumberLimit | TextLimit
LimitOf = Callable[[Config], Limit]


def _duration(config: Config) -> NumberLimit:
    low, high = table.duration_range(config)
    return NumberLimit("duration", low, high)


def _prompt(config: Config) -> TextLimit:
    return TextLimit("prompt", table.prompt_chars(config))


@dataclass(frozen=True)
class Option:
    """One option of one command."""

    name: str
    """Field name: the :class:`~bot.core.models.MusicRequest` field, Discord option name,
    console ``key:`` and (``_`` → ``-``) the Slack and CLI ``--flag``."""
    kind: Kind
    help: str
    """One line; with the default (:attr:`description`) at most 100 characters, Discord's
    limit for option descriptions."""
    required: bool = False
    limit: Limit | LimitOf | None = None
    """A row of the limits table, or a function of the config for config-driven bounds."""
    choices: tuple[str, ...] = ()
    default: str | None = None
    """What leaving the option out means, as help texts say it (the core applies it)."""
    positional: bool = False
    """Slack and the console take it as a bare word (in declaration order)."""
    rest: bool = False
    """A positional option that takes every remaining word (a prompt, a reason)."""
    aliases: tuple[str, ...] = ()
    """Extra Slack flag spellings (``--d`` for ``--duration``)."""
    example: str = ""
    """A value for usage lines (``--duration 20``)."""
    others: bool = False
    """Names another member's account or job: only admins may act on those (the core
    checks), so a frontend that looks admin rights up lazily must look them up."""
    missing: str = ""
    """What to tell a member who left a required option out (default: its range)."""

    @property
    def description(self) -> str:
        """The help line with the default the core applies, as Discord and the CLI show it."""
        return self.help if self.default is None else f"{self.help} (default {self.default})"

    @property
    def flag(self) -> str:
        """``top-k``: the option as a command-line flag."""
        return self.name.replace("_", "-")

    @property
    def spellings(self) -> tuple[str, ...]:
        """Every name a text frontend accepts for this option, lower case."""
        names = (self.name, self.flag, self.name.replace("_", ""), *self.aliases)
        return tuple(dict.fromkeys(n.lower() for n in names))

    def bounds(self, config: Config) -> Limit | None:
        """The limit in force for ``config`` (a NumberLimit or TextLimit), if any."""
        if callable(self.limit):
            return self.limit(config)
        return self.limit

    def missing_text(self, config: Config) -> str:
        """Why a required option is refused when left out, with what to give instead."""
        if self.missing:
            return self.missing
        bound = self.bounds(config)
        if isinstance(bound, NumberLimit):
            kind = "a whole number" if bound.integer else "a number"
            return (f"is missing; give {kind} from {table.show(bound.low)} to "
                    f"{table.show(bound.high)}")
        return "is missing"


@dataclass(frozen=True)
class Command:
    """One command; ``group`` set for sub-commands (``tokens grant``)."""

    name: str
    help: str
    options: tuple[Option, ...] = ()
    access: Access = Access.MEMBER
    group: str | None = None
    only: tuple[str, ...] = ()
    """Frontends that have this command (empty: all). Re-roll and Extend are buttons on
    Discord and Slack and commands only in the console."""

    @property
    def qualified_name(self) -> str:
        """``tokens grant`` for a sub-command, else the name."""
        return f"{self.group} {self.name}" if self.group else self.name

    def option(self, name: str) -> Option:
        """The option called ``name``; KeyError if this command has none."""
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(name)

    def on(self, frontend: str) -> bool:
        """Whether ``frontend`` (``discord``, ``slack``, ``console``) offers this command."""
        return not self.only or frontend in self.only

    @property
    def positionals(self) -> tuple[Option, ...]:
        """Options that text frontends also take as bare words, in order."""
        return tuple(o for o in self.options if o.positional)


@dataclass(frozen=True)
class Group:
    """A command group (Discord ``/tokens``, Slack ``/music admin``)."""

    name: str
    help: str
    access: Access
    aliases: tuple[str, ...] = ()


# ------------------------------------------------------------------------- options

def _number(limit: NumberLimit, help: str, example: str, **extra: object) -> Option:
    kind = Kind.INTEGER if limit.integer else Kind.NUMBER
    default = None if limit.default is None else table.show(limit.default)
    return Option(limit.name, kind, help, limit=limit, default=default, example=example,
                  **extra)  # type: ignore[arg-type]


PROMPT = Option("prompt", Kind.TEXT, "What the music should sound like", required=True,
                limit=_prompt, positional=True, rest=True, example="calm lo-fi piano",
                missing="describe the music you want, e.g. lofi hip hop with rain")
DURATION = Option("duration", Kind.NUMBER, "Length in seconds", required=True,
                  limit=_duration, aliases=("d", "seconds"), example="20")
MODEL = Option("model", Kind.MODEL, "Model to use (default from the server config)",
               aliases=("m",), example="medium")
FORMAT = Option("format", Kind.CHOICE, "File format (default set by the server)",
                choices=table.FORMAT_CHOICES, example="mp3")
MUSIC_OPTIONS: tuple[Option, ...] = (
    PROMPT, DURATION, MODEL,
    _number(table.SEED, "Same seed, similar track", "7"),
    _number(table.TEMPERATURE, "Randomness of sampling", "1.0",
            aliases=("temp",)),
    _number(table.TOP_K, "Sample from the k likeliest", "250"),
    _number(table.TOP_P, "Nucleus sampling, 0 = off", "0"),
    _number(table.CFG, "How closely to follow the prompt", "3",
            aliases=("cfg-coef", "cfg_coef")),
    Option("genre", Kind.TEXT, "Genre folded into the prompt", limit=table.GENRE,
           example="jazz"),
    _number(table.TEMPO, "Beats per minute", "120", aliases=("bpm",)),
    FORMAT,
    replace(_number(table.TAKES, "Variations to make, each charged (default from the config)",
                    "2"), default=None),
    Option("audio", Kind.ATTACHMENT, "A clip to continue: the track is the clip, then new music",
           example="riff.mp3"),
    Option("melody", Kind.ATTACHMENT, "A clip whose melody to follow (melody models only)",
           example="hum.mp3"),
)
"""Every ``/music`` option, in the order help texts show them."""

PROMPTS = Option("prompts", Kind.TEXT, "Prompts: one per line, or separated by ' | '",
                 required=True, positional=True, rest=True, example="calm piano | fast drums",
                 missing="give the prompts, one per line (or separated by ' | ')")
BATCH_OPTIONS: tuple[Option, ...] = (
    PROMPTS, DURATION, MODEL, MUSIC_OPTIONS[-1], FORMAT)
"""``batch``: the prompts, then the options every prompt of the batch shares."""

JOB = Option("job", Kind.JOB, "Job number (see /history)", required=True, limit=table.JOB,
             positional=True, example="12")
MEMBER = Option("member", Kind.MEMBER, "Which member", required=True, positional=True,
                example="@ana", others=True)
REASON = Option("reason", Kind.TEXT, "Shown in the ledger", limit=table.REASON, positional=True,
                rest=True, example="welcome")


APIKEY_ACTIONS = ("create", "list", "revoke")
"""What ``/apikey`` does (the HTTP API's keys, :mod:`bot.core.apikeys`)."""


def _adjust(name: str, help: str, amount: NumberLimit, amount_help: str) -> Command:
    amount_option = Option("amount", Kind.INTEGER, amount_help, required=True, limit=amount,
                           positional=True, example="100")
    return Command(name, help, (MEMBER, amount_option, REASON), Access.ADMIN, group="tokens")


TOKENS = Group("tokens", "Manage members' tokens (admins)", Access.ADMIN, aliases=("admin",))
"""Discord ``/tokens …``; Slack says ``/music admin …`` (its commands hang off /music)."""

COMMANDS: tuple[Command, ...] = (
    Command("music", "Make an original track from a text prompt", MUSIC_OPTIONS),
    Command("batch", "Several prompts at once, charged together (limits.max_batch_prompts)",
            BATCH_OPTIONS, only=("discord", "slack")),
    Command("balance", "Show your tokens (admins: a member's)", (
        Option("member", Kind.MEMBER, "Whose balance to show (default: yours; admins only)",
               positional=True, example="@ana", others=True),)),
    Command("history", "Your recent tracks"),
    Command("queue", "What is waiting to be generated"),
    Command("cancel", "Stop a queued or running job (refunded)", (
        Option("job", Kind.JOB, "Job number (default: your newest active job)",
               limit=table.JOB, positional=True, example="12", others=True),)),
    Command("track", "Send a finished track again", (JOB,)),
    Command("share", "Give a finished track a public page to share", (
        replace(JOB, others=True),)),
    Command("unshare", "Make a track private again (its page link stops working)", (
        replace(JOB, others=True),)),
    Command("stems", "Split a finished track into drums, bass, other, vocals (charged)",
            (JOB,)),
    Command("price", "What a track would cost", (
        replace(DURATION, positional=True), MODEL, FORMAT)),
    Command("help", "How to use the music bot"),
    Command("reroll", "Same request, new seed (charged again)", (JOB,), only=("console",)),
    Command("extend", "Continue a finished track (charged as new audio)", (
        JOB, Option("seconds", Kind.NUMBER, "Seconds to add (default limits.extend_seconds)",
                    positional=True, example="10")), only=("console",)),
    Command("apikey", "Your keys for the HTTP API (shown once, privately)", (
        Option("action", Kind.CHOICE, "create, list or revoke", required=True,
               choices=APIKEY_ACTIONS, positional=True, example="create"),
        Option("label", Kind.TEXT, "A name to recognise the key by", limit=table.LABEL,
               example="jam-build"),
        Option("key", Kind.JOB, "Key number to revoke (see list)", limit=table.JOB,
               positional=True, example="3"),
        Option("member", Kind.MEMBER, "Whose keys (admins only)", example="@ana",
               others=True),
    )),
    _adjust("grant", "Give a member tokens", table.AMOUNT, "How many"),
    _adjust("take", "Take tokens from a member", table.AMOUNT, "How many"),
    _adjust("set", "Set a member's balance", table.BALANCE, "New balance"),
    Command("ledger", "Recent balance changes", (
        Option("member", Kind.MEMBER, "Only this member (default: everyone here)",
               positional=True, example="@ana", others=True),), Access.ADMIN, group="tokens"),
)
"""Every command, in the order help texts list them."""

GROUPS: tuple[Group, ...] = (TOKENS,)


def command(qualified_name: str) -> Command:
    """The command called ``qualified_name`` (``music``, ``tokens grant``); KeyError if none."""
    for entry in COMMANDS:
        if entry.qualified_name == qualified_name:
            return entry
    raise KeyError(qualified_name)


def commands_for(frontend: str, group: str | None = None) -> Iterator[Command]:
    """The commands ``frontend`` offers, top-level ones or those of ``group``."""
    return (c for c in COMMANDS if c.on(frontend) and c.group == group)


def group(name: str) -> Group:
    """The group called ``name`` or one of its aliases; KeyError if none."""
    for entry in GROUPS:
        if name in (entry.name, *entry.aliases):
            return entry
    raise KeyError(name)
