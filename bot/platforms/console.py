"""Console frontend: the chat commands in a terminal, through the very same core.

Speaks the Discord syntax (``/music prompt:"lofi hip hop" duration:5 seed:7``) as one local
user who is also an admin (the operator of the box). Finished tracks stay in the data folder
and their paths are printed. Used by ``musicbot console`` and by ``musicbot run`` when no chat
credentials are configured.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from bot.core.errors import InvalidRequest, MusicBotError
from bot.core.models import Actor, Destination, EventKind, Job, JobEvent, MusicRequest, Track
from bot.core.service import MusicService
from bot.platforms import render

PLATFORM = "console"
COMMUNITY = "local"
MUSIC_OPTIONS = {f.lower() for f in MusicRequest.__dataclass_fields__} | {"top-k", "top-p"}


@dataclass
class CommandResult:
    """Outcome of one console command: text to print and whether it succeeded."""

    ok: bool
    text: str
    job_id: int | None = None


@dataclass
class _JobWatch:
    done: asyncio.Event = field(default_factory=asyncio.Event)
    ok: bool = False
    last_progress: float = -1.0


class ConsoleFrontend:
    """Frontend for the terminal; implements :class:`bot.core.ports.Frontend`."""

    platform = PLATFORM

    def __init__(
        self, service: MusicService, *, user: str = "operator", out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.actor = Actor(PLATFORM, COMMUNITY, user, is_admin=True, display_name=user,
                           operator=True)
        self._out = out or sys.stdout
        self._clock = clock
        self._watches: dict[int, _JobWatch] = {}
        self._counter = 0

    # ---------------------------------------------------------------- Frontend protocol

    async def notify(self, event: JobEvent) -> None:
        watch = self._watches.setdefault(event.job.id, _JobWatch())
        if event.kind is EventKind.PROGRESS:
            if event.progress - watch.last_progress < 0.25 and event.progress < 1:
                return  # a line per quarter keeps scripted output readable
            watch.last_progress = event.progress
        if event.kind is EventKind.DONE:
            return  # deliver() already printed the path
        self._print(render.event_text(event).replace("**", ""))
        if event.kind in (EventKind.FAILED, EventKind.CANCELLED):
            watch.ok = event.kind is EventKind.CANCELLED
            watch.done.set()

    async def deliver(self, job: Job, track: Track) -> None:
        self._print(render.result_text(job, track).replace("**", "")
                    .replace(f"<@{job.destination.user}>", job.destination.user))
        self._print(f"{track.format.upper()} written: {Path(track.path).resolve()}")
        watch = self._watches.setdefault(job.id, _JobWatch())
        watch.ok = True
        watch.done.set()

    # ---------------------------------------------------------------- commands

    async def execute(self, line: str) -> CommandResult:
        """Run one command line; MusicBotError becomes a failed result with its message."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            return CommandResult(False, f"Could not read that command: {exc}.")
        if not words:
            return CommandResult(True, "")
        name, args = words[0].lstrip("/").lower(), words[1:]
        handler = getattr(self, f"_cmd_{name}", None)
        if handler is None:
            return CommandResult(False, f"Unknown command /{name}. Try /help.")
        try:
            return await handler(args)
        except MusicBotError as exc:
            return CommandResult(False, exc.user_message)

    async def wait_for(self, job_id: int, timeout: float | None = None) -> bool:
        """Wait until a job is delivered (True) or failed (False)."""
        watch = self._watches.setdefault(job_id, _JobWatch())
        await asyncio.wait_for(watch.done.wait(), timeout)
        return watch.ok

    async def run_script(self, commands: list[str], job_timeout: float | None = None) -> int:
        """Run commands in order, waiting for each track; exit code 1 if any failed."""
        status = 0
        for line in commands:
            self._print(f"> {line}")
            result = await self.execute(line)
            if result.text:
                self._print(result.text.replace("**", ""))
            if result.ok and result.job_id is not None:
                result.ok = await self.wait_for(result.job_id, job_timeout)
            status = status or (0 if result.ok else 1)
        return status

    async def interactive(self) -> None:
        """Read commands from stdin until EOF or /quit; jobs keep running in the background."""
        self._print("musicbot console — /help for commands, /quit to leave.")
        while True:
            line = await asyncio.to_thread(_read_line)
            if line is None or line.strip() in ("/quit", "/exit"):
                return
            result = await self.execute(line)
            if result.text:
                self._print(result.text.replace("**", ""))

    async def _cmd_music(self, args: list[str]) -> CommandResult:
        options = _options(args, positional="prompt")
        unknown = set(options) - MUSIC_OPTIONS
        if unknown:
            raise InvalidRequest("option", f"unknown option {sorted(unknown)[0]!r}")
        request = MusicRequest(**{k.replace("-", "_"): v for k, v in options.items()})
        receipt = await self.service.request_music(
            self.actor, request, self._destination(), self._request_id())
        self._watches.setdefault(receipt.job.id, _JobWatch())
        return CommandResult(True, render.receipt_text(receipt), receipt.job.id)

    async def _cmd_reroll(self, args: list[str]) -> CommandResult:
        receipt = await self.service.reroll(self.actor, _first(args, "job"), self._destination(),
                                            self._request_id())
        return CommandResult(True, render.receipt_text(receipt), receipt.job.id)

    async def _cmd_extend(self, args: list[str]) -> CommandResult:
        seconds = args[1] if len(args) > 1 else 10
        receipt = await self.service.extend(self.actor, _first(args, "job"), seconds,
                                            self._destination(), self._request_id())
        return CommandResult(True, render.receipt_text(receipt), receipt.job.id)

    async def _cmd_track(self, args: list[str]) -> CommandResult:
        job, track = await self.service.stored_track(self.actor, _first(args, "job"))
        return CommandResult(True, f"Job #{job.id}: {Path(track.path).resolve()}")

    async def _cmd_balance(self, args: list[str]) -> CommandResult:
        member = args[0] if args else None
        balance = await self.service.balance(self.actor, member)
        whose = f"{member}'s" if member else "Your"
        return CommandResult(True, render.balance_text(balance, whose))

    async def _cmd_history(self, args: list[str]) -> CommandResult:
        return CommandResult(True, render.history_text(await self.service.history(self.actor)))

    async def _cmd_queue(self, args: list[str]) -> CommandResult:
        return CommandResult(True, render.queue_text(await self.service.queue(self.actor)))

    async def _cmd_cancel(self, args: list[str]) -> CommandResult:
        job = await self.service.cancel(self.actor, args[0] if args else None)
        return CommandResult(True, f"Cancel requested for job #{job.id} ({job.state.value}).")

    async def _cmd_price(self, args: list[str]) -> CommandResult:
        options = _options(args, positional="duration")
        model = options.get("model") or self.service.config.models.default
        cost = self.service.price(options.get("duration"), model, options.get("format"))
        return CommandResult(True, render.price_text(cost, float(options["duration"]), model))

    async def _cmd_tokens(self, args: list[str]) -> CommandResult:
        if not args:
            raise InvalidRequest("command", "use /tokens grant|take|set MEMBER AMOUNT [REASON] "
                                 "or /tokens ledger [MEMBER]")
        action, rest = args[0].lower(), args[1:]
        if action == "ledger":
            entries = await self.service.ledger(self.actor, rest[0] if rest else None)
            return CommandResult(True, render.ledger_text(entries))
        if action not in ("grant", "take", "set") or len(rest) < 2:
            raise InvalidRequest("command", "use /tokens grant|take|set MEMBER AMOUNT [REASON]")
        balance = await self.service.adjust_balance(self.actor, action, rest[0], rest[1],
                                                    " ".join(rest[2:]))
        return CommandResult(True, render.balance_text(balance, f"{rest[0]}'s new"))

    async def _cmd_help(self, args: list[str]) -> CommandResult:
        extra = "\nConsole only: /reroll JOB, /extend JOB [SECONDS], /quit."
        return CommandResult(True, render.HELP_TEXT.replace("**", "") + extra)

    def _destination(self) -> Destination:
        return Destination(PLATFORM, COMMUNITY, "terminal", self.actor.user,
                           upload_limit=1024 * 1024 * 1024)

    def _request_id(self) -> str:
        self._counter += 1
        return f"console:{time.time_ns()}:{self._counter}"

    def _print(self, text: str) -> None:
        print(text, file=self._out, flush=True)


def _options(args: list[str], positional: str) -> dict[str, str]:
    """Parse ``key:value`` words (Discord style); bare words form the positional option."""
    options: dict[str, str] = {}
    bare: list[str] = []
    for word in args:
        key, sep, value = word.partition(":")
        if sep and key and key.replace("_", "").replace("-", "").isalnum():
            options[key.lower()] = value
        else:
            bare.append(word)
    if bare:
        if positional in options:
            raise InvalidRequest("command", f"unexpected text {' '.join(bare)!r}")
        options[positional] = " ".join(bare)
    return options


def _first(args: list[str], name: str) -> str:
    if not args:
        raise InvalidRequest(name, "is missing")
    return args[0]


def _read_line() -> str | None:
    try:
        return input("musicbot> ")
    except EOFError:
        return None
