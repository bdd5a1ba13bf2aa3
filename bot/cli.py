"""``musicbot`` command line: run, console, generate, doctor, db.

Every expected failure (bad config, missing ffmpeg, model that cannot load) ends in one clear
message on stderr and exit status 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot import eventloop
from bot.config import Config, load_config
from bot.core.errors import MusicBotError
from bot.core.models import MusicRequest
from bot.logsetup import configure_logging

if TYPE_CHECKING:
    from bot.app import Role

log = logging.getLogger("musicbot")

DEFAULT_CONFIG = "config.yaml"
FFMPEG_HELP = (
    "ffmpeg is not installed; musicbot needs it to encode MP3s. "
    "Install it with: sudo apt-get install -y ffmpeg  (macOS: brew install ffmpeg)"
)


class UsageError(MusicBotError):
    """A command-line problem the user can fix (missing ffmpeg, bad path)."""

    code = "usage"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``musicbot`` console script."""
    args = _parser().parse_args(argv)
    try:
        config = _config(args)
        configure_logging(config.log_level)
        handler: Callable[[argparse.Namespace, Config], int] = args.handler
        return handler(args, config)
    except MusicBotError as exc:
        print(f"musicbot: {exc.user_message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musicbot", description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-C", help=f"YAML config file (default: {DEFAULT_CONFIG} "
                        "if present, else built-in defaults; env MUSICBOT_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start the bot: store, worker and every configured frontend")
    run.add_argument("--model", help="override models.default (catalogue key, hub id, folder "
                     "or 'debug')")
    run.set_defaults(handler=cmd_run)

    api = sub.add_parser("api", help="serve the HTTP API (and render its jobs) without the "
                         "chat bots")
    api.add_argument("--model", help="override models.default")
    api.set_defaults(handler=cmd_api)

    worker = sub.add_parser("worker", help="render only: load models and make tracks for "
                            "the shared queue (no chat connection, no delivery)")
    worker.add_argument("--model", help="override models.default")
    worker.set_defaults(handler=cmd_worker)

    frontends = sub.add_parser("frontends", help="chat only: Discord, Slack (and the HTTP "
                               "API) with delivery; no models, no GPU; workers render")
    frontends.set_defaults(handler=cmd_frontends)

    console = sub.add_parser("console", help="use the bot's commands in this terminal")
    console.add_argument("--model", help="override models.default")
    console.add_argument("-c", dest="commands", action="append", metavar="CMD",
                         help="run this command (repeatable) and exit; non-zero if one fails")
    console.add_argument("--user", default="operator", help="local user name (default operator)")
    console.set_defaults(handler=cmd_console)

    gen = sub.add_parser("generate", help="one-shot generation to a file (no ledger)")
    add_generate_arguments(gen)
    gen.set_defaults(handler=cmd_generate)

    doctor = sub.add_parser("doctor", help="check config, ffmpeg, database, model and tokens")
    doctor.add_argument("--model", help="model to try loading (default: models.default)")
    doctor.set_defaults(handler=cmd_doctor)

    admin = sub.add_parser("admin", help="manage balances of any community from the shell")
    admin.add_argument("action", choices=("grant", "take", "set", "balance", "ledger"))
    admin.add_argument("member", nargs="?", help="user id (Discord user id, Slack U…)")
    admin.add_argument("amount", nargs="?", help="tokens (grant, take, set)")
    admin.add_argument("--platform", default="console", choices=("discord", "slack", "console"))
    admin.add_argument("--community", default="local",
                       help="Discord server id or Slack team id (console: local)")
    admin.add_argument("--reason", default="", help="written to the ledger")
    admin.add_argument("--limit", type=int, default=20, help="ledger lines to show")
    admin.set_defaults(handler=cmd_admin)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply pending schema migrations").set_defaults(
        handler=cmd_db_upgrade)
    return parser


GENERATE_DEFAULTS = {"duration": "10"}
"""A one-shot tool has nobody to ask again: ``generate`` without --duration makes 10 s."""


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """``generate``'s arguments, one per ``/music`` option of the command catalogue.

    Values stay text: :mod:`bot.core.requests` validates them exactly as for chat members,
    so the CLI accepts a value exactly when every chat frontend does.
    """
    from bot.core import catalogue

    for option in catalogue.command("music").options:
        if option.positional:
            parser.add_argument(option.name, help=option.help)
            continue
        flags = [f"--{option.flag}", *(f"-{a}" for a in option.aliases if len(a) == 1)]
        what = option.description if option.name != "format" else (
            f"{', '.join(option.choices)} (default: the -o extension, else audio.format)")
        parser.add_argument(*flags, dest=option.name, default=GENERATE_DEFAULTS.get(option.name),
                            help=what)
    parser.add_argument("-o", "--output", default=None,
                        help="output file (default: track.FORMAT)")
    parser.add_argument("--stems", action="store_true",
                        help="also write drums, bass, other and vocals beside the output "
                             "(OUT.drums.FORMAT…), split with Demucs")
    parser.add_argument("--stems-model", default=None,
                        help="Demucs model for --stems (default: models.stems; debug = "
                             "random weights, noise)")


def generate_request(args: argparse.Namespace, fmt: str | None) -> MusicRequest:
    """The raw request ``musicbot generate`` makes from its arguments."""
    from bot.core import catalogue

    values = {o.name: getattr(args, o.name) for o in catalogue.command("music").options}
    # --model already became models.default (a hub id or folder is keyed by with_model)
    return MusicRequest(**{**values, "model": None, "format": fmt})


def _config(args: argparse.Namespace) -> Config:
    path = args.config or os.environ.get("MUSICBOT_CONFIG")
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    config = load_config(path)
    if getattr(args, "model", None):
        config = config.with_model(args.model)
    return config


def require_ffmpeg() -> None:
    if shutil.which("ffmpeg") is None:
        raise UsageError(FFMPEG_HELP)


# --------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    require_ffmpeg()
    return eventloop.run(config, _run(config))


def cmd_worker(args: argparse.Namespace, config: Config) -> int:
    """``musicbot worker``: one of N rendering processes on the shared database and store."""
    require_ffmpeg()
    return eventloop.run(config, _run(config, role="worker"))


def cmd_frontends(args: argparse.Namespace, config: Config) -> int:
    """``musicbot frontends``: the chat side; renders nothing, so it needs no ffmpeg or torch."""
    return eventloop.run(config, _run(config, role="frontends"))


async def _run(config: Config, role: Role = "run") -> int:
    from bot.app import App, api_frontend, chat_frontends, missing_chat_credentials
    from bot.platforms.console import ConsoleFrontend

    app = App(config)
    frontends = chat_frontends(config, app.service) if role != "worker" else []
    for frontend in frontends:
        app.add_frontend(frontend)
    http = api_frontend(config, app.service) if role != "worker" else None
    if http is not None:
        app.add_frontend(http)  # beside the chat bots, or beside the console fallback
    console = None
    if not frontends and role != "worker":
        for note in missing_chat_credentials(config):
            log.warning(note)
        print("No chat credentials are set: starting the console frontend instead "
              "(see README, 'Connecting Discord and Slack').", file=sys.stderr)
        console = ConsoleFrontend(app.service)
        app.add_frontend(console)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await app.start(role=role)
    _announce_models(app)
    try:
        if console is not None and sys.stdin.isatty():
            waiter = asyncio.create_task(stop.wait())
            repl = asyncio.create_task(console.interactive())
            await asyncio.wait({waiter, repl}, return_when=asyncio.FIRST_COMPLETED)
            for task in (waiter, repl):
                task.cancel()
        else:
            log.info("musicbot is running (%s); press Ctrl+C to stop", role)
            await stop.wait()
    finally:
        log.info("shutting down: running jobs go back to the queue")
        await app.stop()
    return 0


def cmd_api(args: argparse.Namespace, config: Config) -> int:
    """``musicbot api``: the HTTP API with the worker, no chat frontends (api.enabled or not)."""
    require_ffmpeg()
    return eventloop.run(config, _api(dataclasses.replace(
        config, api=dataclasses.replace(config.api, enabled=True))))


async def _api(config: Config) -> int:
    from bot.app import App, api_frontend

    app = App(config)
    app.add_frontend(api_frontend(config, app.service))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    _announce_models(app)
    try:
        log.info("musicbot API is running; press Ctrl+C to stop")
        await stop.wait()
    finally:
        await app.stop()
    return 0


def _announce_models(app: object) -> None:
    for key, engine in getattr(app, "engines", {}).items():
        note = " — random weights, the output is NOISE" if engine.noise else ""
        print(f"model {key} ({engine.source}) loaded on {engine.device} in "
              f"{engine.load_s:.1f} s{note}", file=sys.stderr)


# --------------------------------------------------------------------------- console


def _makes_music(command: str) -> bool:
    return command.strip().split(" ", 1)[0] in ("/music", "/reroll", "/extend")


def cmd_console(args: argparse.Namespace, config: Config) -> int:
    require_ffmpeg()
    return eventloop.run(config, _console(config, args.commands or [], args.user))


async def _console(config: Config, commands: list[str], user: str) -> int:
    from bot.app import App
    from bot.platforms.console import ConsoleFrontend

    app = App(config)
    console = ConsoleFrontend(app.service, user=user)
    app.add_frontend(console)
    # The console renders only its own jobs, and a script with nothing to make renders (and
    # recovers) nothing: `console -c /balance` next to a running bot must not touch its jobs.
    renders = not commands or any(_makes_music(c) for c in commands)
    await app.start(worker=renders, render_for=frozenset({console.platform}))
    _announce_models(app)
    try:
        if commands:
            return await console.run_script(commands, config.generation.job_timeout_s * 2)
        await console.interactive()
        return 0
    finally:
        await app.stop()


# --------------------------------------------------------------------------- generate


def cmd_generate(args: argparse.Namespace, config: Config) -> int:
    """One track to a file, validated like a member's request (no ledger, no size limit)."""
    from bot.core.requests import validate_request

    require_ffmpeg()
    params = validate_request(config, _with_clips(config, generate_request(
        args, _output_format(args, config))))
    output = Path(args.output or f"track.{params.format}")
    # Imported only now: torch takes seconds to import, and bad input should fail at once.
    from bot.app import load_engine
    from generation.audio import make_track
    from generation.errors import GenerationError
    from generation.worker import clip_request

    engine = load_engine(config, params.model)
    request = asyncio.run(clip_request(params))  # --audio / --melody: the stored clips
    print(f"model {params.model} on {engine.device} (loaded in {engine.load_s:.1f} s)"
          + (" — random weights: the output is NOISE" if engine.noise else ""), file=sys.stderr)
    bar = _ProgressBar()
    (audio,) = engine.generate([request], on_progress=bar.update)
    bar.close()
    try:
        track = make_track(audio, 0, params.format, 2**40, config, noise=engine.noise)
    except GenerationError as exc:
        raise UsageError(f"could not encode the {params.format} file: {exc.user_message}") from None
    output.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(track.path, output)
    if track.waveform_path:
        os.remove(track.waveform_path)
    print(f"{output} ({track.duration_s:.1f} s, seed {params.seed})")
    if getattr(args, "stems", False):
        _write_stems(output, params.format, args.stems_model or config.models.stems, config)
    return 0


def _write_stems(output: Path, fmt: str, name: str, config: Config) -> None:
    """Split the written track as the worker splits a stored one; the stems go beside it."""
    from generation.audio import encode, load_track
    from generation.engine import resolve_device
    from generation.errors import GenerationError
    from generation.stems import Separator

    if not name:
        raise UsageError("--stems needs a Demucs model: set models.stems or pass --stems-model")
    try:
        separator = Separator.load(name, resolve_device(config.generation.device))
    except GenerationError as exc:
        raise UsageError(exc.user_message) from None
    print(f"stems model {name}" + (" — random weights: the stems are NOISE"
                                   if separator.noise else ""), file=sys.stderr)
    bar = _ProgressBar()
    stems = separator.separate(load_track(output), on_progress=bar.update)
    bar.close()
    for stem, audio in stems.items():
        data, _ = encode(audio, fmt, 2**40, config.audio.bitrate_kbps)
        path = output.with_name(f"{output.stem}.{stem}{output.suffix or '.' + fmt}")
        path.write_bytes(data)
        print(path)


def _with_clips(config: Config, request: MusicRequest) -> MusicRequest:
    """``--audio FILE`` / ``--melody FILE`` checked and stored as clips (see bot.media)."""
    from dataclasses import replace

    from bot.media.clips import local_clips

    model = config.models.default
    clips = asyncio.run(local_clips(config, {"audio": request.audio, "melody": request.melody,
                                             "model": model}))
    return replace(request, **clips)


def _output_format(args: argparse.Namespace, config: Config) -> str | None:
    """``--format``, else the ``-o`` extension when it names a format; a clash is an error."""
    from bot.config import FORMATS

    suffix = Path(args.output).suffix.lower().lstrip(".") if args.output else ""
    given = args.format.strip().lower() if args.format else None
    if given and suffix in FORMATS and given != suffix:
        raise UsageError(f"--format {given} does not match the output file {args.output!r} "
                         f"(.{suffix}); drop --format or change the file name")
    if given is None and suffix and suffix not in FORMATS:
        raise UsageError(f"cannot tell the format from {args.output!r}: end the file name "
                         f"with .{', .'.join(FORMATS)} or pass --format")
    return given or suffix or None


class _ProgressBar:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self) -> None:
        self._last = 0.0

    def update(self, fraction: float) -> None:
        from bot.platforms.render import progress_bar

        now = time.monotonic()
        if now - self._last >= 0.1 or fraction >= 1:
            self._last = now
            print(f"\r{progress_bar(fraction)}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.update(1.0)
        print(file=sys.stderr)


# --------------------------------------------------------------------------- doctor / db


def cmd_doctor(args: argparse.Namespace, config: Config) -> int:
    from bot.doctor import run_checks

    return run_checks(config, model=args.model)


def cmd_admin(args: argparse.Namespace, config: Config) -> int:
    """Balances and ledger of any community, acting as the shell operator (an admin)."""
    from bot.app import App
    from bot.core.models import Actor
    from bot.platforms import render

    operator = f"shell:{os.environ.get('USER', 'operator')}"
    actor = Actor(args.platform, args.community, operator, is_admin=True, operator=True)
    if args.action in ("grant", "take", "set") and (args.member is None or args.amount is None):
        raise UsageError(f"usage: musicbot admin {args.action} MEMBER AMOUNT [--reason TEXT]")

    async def act() -> str:
        async with App.store(config) as service:
            if args.action == "ledger":
                return render.ledger_text(await service.ledger(actor, args.member, args.limit))
            if args.action == "balance":
                if args.member is None:
                    raise UsageError("usage: musicbot admin balance MEMBER")
                return render.balance_text(await service.balance(actor, args.member),
                                           f"{args.member}'s")
            balance = await service.adjust_balance(actor, args.action, args.member, args.amount,
                                                   args.reason)
            return render.balance_text(balance, f"{args.member}'s new")

    print(asyncio.run(act()).replace("**", ""))
    return 0


def cmd_db_upgrade(args: argparse.Namespace, config: Config) -> int:
    from bot.app import open_database

    async def upgrade() -> list[int]:
        async with open_database(config, migrate=False) as db:
            return await db.upgrade()

    applied = asyncio.run(upgrade())
    where = config.database_path
    print(f"{where}: applied migrations {applied}" if applied else f"{where}: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
