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
from typing import Any, TextIO

from bot.config import Config
from bot.core import catalogue
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
from bot.platforms.apikey_command import apikey_answer

log = logging.getLogger(__name__)

Values = dict[str, Any]

PLATFORM = "console"
COMMUNITY = "local"
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
        link = render.page_line(self.service.config, job, "console")
        self._print(render.result_text(job, track, link=link).replace("**", "")
                    .replace(f"<@{job.destination.user}>", job.destination.user))
        self._print(f"{track.format.upper()} written: {Path(track.path).resolve()}")
        for name, path in (track.stems or {}).items():
            self._print(f"  {name}: {Path(path).resolve()}")
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
        try:
            entry, values = parse_line(self.service.config, words)
            if entry is None:
                return CommandResult(False, f"Unknown command /{words[0].lstrip('/')[:40]}. "
                                     "Try /help.")
            handler = getattr(self, "_cmd_" + entry.qualified_name.replace(" ", "_"))
            return await handler(values)
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

    # One handler per catalogue command the console offers; ``values`` are raw option
    # values by name, already checked for unknown, repeated and missing options.

    async def _cmd_music(self, values: Values) -> CommandResult:
        from bot.media.clips import local_clips

        clips = await local_clips(self.service.config, values)  # audio:/path/to/file.mp3
        receipt = await self.service.request_music(
            self.actor, MusicRequest(**{**values, **clips}), self._destination(),
            self._request_id())
        return self._queued(receipt)

    async def _cmd_reroll(self, values: Values) -> CommandResult:
        receipt = await self.service.reroll(self.actor, values["job"], self._destination(),
                                            self._request_id())
        return self._queued(receipt)

    async def _cmd_extend(self, values: Values) -> CommandResult:
        seconds = values.get("seconds") or self.service.config.limits.extend_seconds
        receipt = await self.service.extend(self.actor, values["job"], seconds,
                                            self._destination(), self._request_id())
        return self._queued(receipt)

    async def _cmd_stems(self, values: Values) -> CommandResult:
        receipt = await self.service.stems(self.actor, values["job"], self._destination(),
                                           self._request_id())
        return self._queued(receipt)

    def _queued(self, receipt: Receipt) -> CommandResult:
        """The receipt and, since only the operator reads this terminal, the balance too."""
        self._watches.setdefault(receipt.job.id, _JobWatch())
        text = render.receipt_text(receipt)
        if not receipt.duplicate:
            text += "\n" + render.charged_text(receipt)
        return CommandResult(True, text, receipt.job.id)

    async def _cmd_track(self, values: Values) -> CommandResult:
        job, track = await self.service.stored_track(self.actor, values["job"])
        return CommandResult(True, f"Job #{job.id}: {Path(track.path).resolve()}")

    async def _cmd_share(self, values: Values) -> CommandResult:
        job = await self.service.sharing.share(self.actor, values["job"])
        return CommandResult(True, render.shared_text(self.service.config, job, "console"))

    async def _cmd_unshare(self, values: Values) -> CommandResult:
        job = await self.service.sharing.unshare(self.actor, values["job"])
        return CommandResult(True, render.unshared_text(job))

    async def _cmd_balance(self, values: Values) -> CommandResult:
        member = values.get("member")
        balance = await self.service.balance(self.actor, member)
        return CommandResult(True, render.balance_text(balance, f"{member}'s" if member
                                                       else "Your"))

    async def _cmd_history(self, values: Values) -> CommandResult:
        return CommandResult(True, render.history_text(await self.service.history(self.actor)))

    async def _cmd_queue(self, values: Values) -> CommandResult:
        return CommandResult(True, render.queue_text(await self.service.queue(self.actor)))

    async def _cmd_cancel(self, values: Values) -> CommandResult:
        job = await self.service.cancel(self.actor, values.get("job"))
        return CommandResult(True, f"Cancel requested for job #{job.id} ({job.state.value}).")

    async def _cmd_price(self, values: Values) -> CommandResult:
        config = self.service.config
        model = validate_model(config, values.get("model"))
        cost = self.service.price(values.get("duration"), model, values.get("format"))
        seconds = validate_duration(config, values.get("duration"), model)
        return CommandResult(True, render.price_text(cost, seconds, model))

    async def _adjust(self, action: str, values: Values) -> CommandResult:
        member = values["member"]
        balance = await self.service.adjust_balance(self.actor, action, member, values["amount"],
                                                    values.get("reason", ""))
        return CommandResult(True, render.balance_text(balance, f"{member}'s new"))

    async def _cmd_tokens_grant(self, values: Values) -> CommandResult:
        return await self._adjust("grant", values)

    async def _cmd_tokens_take(self, values: Values) -> CommandResult:
        return await self._adjust("take", values)

    async def _cmd_tokens_set(self, values: Values) -> CommandResult:
        return await self._adjust("set", values)

    async def _cmd_tokens_ledger(self, values: Values) -> CommandResult:
        entries = await self.service.ledger(self.actor, values.get("member"))
        return CommandResult(True, render.ledger_text(entries))

    async def _cmd_apikey(self, values: Values) -> CommandResult:
        text = await apikey_answer(self.service.apikeys, self.actor, values["action"],
                                   values.get("label"), values.get("key"), values.get("member"))
        return CommandResult(True, text.replace("`", ""))

    async def _cmd_help(self, values: Values) -> CommandResult:
        help_text = render.help_text(self.service.config, PLATFORM).replace("**", "")
        return CommandResult(True, help_text + "\nConsole only: /quit leaves.")

    def _destination(self) -> Destination:
        return Destination(PLATFORM, COMMUNITY, "terminal", self.actor.user,
                           upload_limit=1024 * 1024 * 1024)

    def _request_id(self) -> str:
        self._counter += 1
        return f"console:{time.time_ns()}:{self._counter}"

    def _print(self, text: str) -> None:
        print(text, file=self._out, flush=True)


def parse_line(config: Config, words: list[str]) -> tuple[catalogue.Command | None, Values]:
    """The catalogue command a console line names and its option values (raw text).

    Syntax as on Discord: ``/music prompt:"lofi" duration:5``; bare words fill the command's
    positional options in order (``/music lofi hip hop duration:5``, ``/tokens grant bob 5``).
    None for a command the console does not have.

    Raises:
        InvalidRequest: an unknown group action, an option the command does not have, one
            given twice, stray words, or a required option left out.
    """
    name, args = words[0].lstrip("/").lower(), words[1:]
    if name in (g.name for g in catalogue.GROUPS):
        actions = [c.name for c in catalogue.commands_for(PLATFORM, name)]
        if not args or args[0].lower() not in actions:
            raise InvalidRequest("command", f"use /{name} {'|'.join(actions)} (see /help)")
        name, args = f"{name} {args[0].lower()}", args[1:]
    entry = next((c for c in catalogue.COMMANDS
                  if c.qualified_name == name and c.on(PLATFORM)), None)
    if entry is None:
        return None, {}
    values = _options(entry, args)
    for option in entry.options:
        if option.required and not str(values.get(option.name, "")).strip():
            raise InvalidRequest(option.name, option.missing_text(config))
    return entry, values


def _options(entry: catalogue.Command, args: list[str]) -> Values:
    """Named ``key:value`` words by option name, then bare words into positional options."""
    spellings = {s: o.name for o in entry.options for s in o.spellings}
    values: Values = {}
    bare: list[str] = []
    for word in args:
        key, sep, value = word.partition(":")
        if not (sep and key and key.replace("_", "").replace("-", "").isalnum()):
            bare.append(word)
            continue
        name = spellings.get(key.lower())
        if name is None:
            known = ", ".join(o.name for o in entry.options) or "none"
            raise InvalidRequest(key.lower()[:30], f"is not an option of "
                                 f"/{entry.qualified_name} (options: {known})")
        if name in values:
            raise InvalidRequest(name, "was given twice")
        values[name] = value
    _fill_positionals(entry, values, bare)
    return values


def _fill_positionals(entry: catalogue.Command, values: Values, bare: list[str]) -> None:
    free = [o for o in entry.positionals if o.name not in values]
    for option in free:
        if not bare:
            return
        take = len(bare) if option.rest else 1
        values[option.name], bare = " ".join(bare[:take]), bare[take:]
    if bare:
        # every slot is taken: "/music drums prompt:bass" gives the prompt twice
        field = entry.positionals[-1].name if entry.positionals else "command"
        raise InvalidRequest(field, f"given twice (stray text {' '.join(bare)[:40]!r})")


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


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    # a reader can fire twice before it is removed; the second must not raise
    if not future.done():
        future.set_result(value)


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    ready = loop.create_future()
    loop.add_reader(fd, _settle, ready, None)
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
            loop.call_soon_threadsafe(_settle, future, result)

    threading.Thread(target=read, name="console-stdin", daemon=True).start()
    return await future
