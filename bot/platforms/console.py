"""Console frontend: the chat commands in a terminal, through the very same core.

Speaks the Discord syntax (``/music prompt:"lofi hip hop" duration:5 seed:7``) as one local
user who is also an admin (the operator of the box). Finished tracks stay in the data folder
and their paths are printed. Used by ``musicbot console`` and by ``musicbot run`` when no chat
credentials are configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from bot.core.errors import InvalidRequest, MusicBotError
from bot.core.models import (
    Actor,
    Destination,
    EventKind,
    Job,
    JobEvent,
    MusicRequest,
    Receipt,
    Track,
)
from bot.core.requests import validate_duration, validate_model
from bot.core.service import MusicService
from bot.platforms import render

log = logging.getLogger(__name__)

PLATFORM = "console"
COMMUNITY = "local"
MUSIC_OPTIONS = {f.lower() for f in MusicRequest.__dataclass_fields__} | {"top-k", "top-p"}
PRICE_OPTIONS = {"duration", "model", "format"}
CRASH_TEXT = ("Something went wrong running that command (details in the log at DEBUG level). "
              "Nothing was charged for it unless a job number was shown.")


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
        """Run one command line; never raises (a script or the REPL must survive any input).

        MusicBotError becomes a failed result with its message; anything else is a bug, kept
        in the log at DEBUG with its traceback while the user gets one sentence.
        """
        try:
            words = shlex.split(line)
        except ValueError as exc:
            return CommandResult(False, f"Could not read that command: {exc}.")
        if not words:
            return CommandResult(True, "")
        name, args = words[0].lstrip("/").lower(), words[1:]
        handler = getattr(self, f"_cmd_{name}", None) if name.isidentifier() else None
        if handler is None:
            return CommandResult(False, f"Unknown command /{name[:40]}. Try /help.")
        try:
            return await handler(args)
        except MusicBotError as exc:
            return CommandResult(False, exc.user_message)
        except Exception:
            log.debug("console command %r failed", line, exc_info=True)
            return CommandResult(False, CRASH_TEXT)

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
        stdin = _StdinLines()
        while True:
            line = await stdin.readline("musicbot> ", self._out)
            if line is None or line.strip() in ("/quit", "/exit"):
                return
            result = await self.execute(line)
            if result.text:
                self._print(result.text.replace("**", ""))

    async def _cmd_music(self, args: list[str]) -> CommandResult:
        options = _options(args, positional="prompt", known=MUSIC_OPTIONS, command="music")
        if not options.get("prompt", "").strip():
            raise InvalidRequest("prompt", 'describe the music, e.g. /music prompt:"lofi hip '
                                 'hop" duration:10')
        request = MusicRequest(**{k.replace("-", "_"): v for k, v in options.items()})
        receipt = await self.service.request_music(
            self.actor, request, self._destination(), self._request_id())
        return self._queued(receipt)

    async def _cmd_reroll(self, args: list[str]) -> CommandResult:
        receipt = await self.service.reroll(self.actor, _first(args, "job"), self._destination(),
                                            self._request_id())
        return self._queued(receipt)

    async def _cmd_extend(self, args: list[str]) -> CommandResult:
        seconds = args[1] if len(args) > 1 else self.service.config.limits.extend_seconds
        receipt = await self.service.extend(self.actor, _first(args, "job"), seconds,
                                            self._destination(), self._request_id())
        return self._queued(receipt)

    def _queued(self, receipt: Receipt) -> CommandResult:
        """The receipt and, since only the operator reads this terminal, the balance too."""
        self._watches.setdefault(receipt.job.id, _JobWatch())
        text = render.receipt_text(receipt)
        if not receipt.duplicate:
            text += "\n" + render.charged_text(receipt)
        return CommandResult(True, text, receipt.job.id)

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
        options = _options(args, positional="duration", known=PRICE_OPTIONS, command="price")
        config = self.service.config
        model = validate_model(config, options.get("model"))
        cost = self.service.price(options.get("duration"), model, options.get("format"))
        seconds = validate_duration(config, options.get("duration"), model)
        return CommandResult(True, render.price_text(cost, seconds, model))

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
        help_text = render.help_text(self.service.config).replace("**", "")
        return CommandResult(True, help_text + extra)

    def _destination(self) -> Destination:
        return Destination(PLATFORM, COMMUNITY, "terminal", self.actor.user,
                           upload_limit=1024 * 1024 * 1024)

    def _request_id(self) -> str:
        self._counter += 1
        return f"console:{time.time_ns()}:{self._counter}"

    def _print(self, text: str) -> None:
        print(text, file=self._out, flush=True)


def _options(args: list[str], positional: str, known: set[str],
             command: str) -> dict[str, str]:
    """Parse ``key:value`` words (Discord style); bare words form the positional option.

    Raises:
        InvalidRequest: an option ``command`` does not have, one given twice, or stray words
            next to an explicit positional option.
    """
    options: dict[str, str] = {}
    bare: list[str] = []
    for word in args:
        key, sep, value = word.partition(":")
        if not (sep and key and key.replace("_", "").replace("-", "").isalnum()):
            bare.append(word)
            continue
        name = key.lower()
        if name not in known:
            raise InvalidRequest(name[:30], f"is not an option of /{command} (options: "
                                 f"{', '.join(sorted(known))})")
        if name in options:
            raise InvalidRequest(name, "was given twice")
        options[name] = value
    if bare:
        if positional in options:
            raise InvalidRequest(positional, f"given twice (stray text {' '.join(bare)[:40]!r})")
        options[positional] = " ".join(bare)
    return options


def _first(args: list[str], name: str) -> str:
    if not args:
        raise InvalidRequest(name, "is missing")
    return args[0]


class _StdinLines:
    """Lines from stdin without blocking the event loop or a thread that outlives it.

    ``asyncio.to_thread(input)`` kept ``musicbot run`` alive after SIGTERM: asyncio.run
    waits for its executor's threads at exit, and that one sits in ``input()`` until a line
    comes. Watching the file descriptor with the loop's reader leaves nothing behind; where
    the loop cannot watch stdin (a regular file, Windows) a daemon thread reads instead.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._eof = False

    async def readline(self, prompt: str, out: TextIO) -> str | None:
        """The next line without its newline, or None at end of input."""
        print(prompt, end="", file=out, flush=True)
        loop = asyncio.get_running_loop()
        try:
            fd = sys.stdin.fileno()
            while b"\n" not in self._buffer and not self._eof:
                await _readable(loop, fd)
                chunk = os.read(fd, 65536)
                self._eof = not chunk
                self._buffer += chunk
        except (OSError, ValueError, NotImplementedError):
            return await _line_in_daemon_thread(loop)
        if not self._buffer:
            return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace").rstrip("\r")


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    ready = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _line_in_daemon_thread(loop: asyncio.AbstractEventLoop) -> str | None:
    future: asyncio.Future[str | None] = loop.create_future()

    def read() -> None:
        line = sys.stdin.readline()
        result = line.rstrip("\r\n") if line else None
        # RuntimeError: the loop is gone, so nobody is waiting for this line any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(lambda: future.done() or future.set_result(result))

    threading.Thread(target=read, name="console-stdin", daemon=True).start()
    return await future
