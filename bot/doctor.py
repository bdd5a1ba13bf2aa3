"""``musicbot doctor``: check what the bot needs and say how to fix what is missing."""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from bot.config import Config
from bot.core.errors import MusicBotError


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False
    """A warning is reported but does not make doctor fail (e.g. no chat tokens)."""


def run_checks(config: Config, model: str | None = None, out: Callable[[str], None] = print) -> int:
    """Run every check, print one line each, return 0 when nothing failed."""
    checks = [
        Check("config", True, f"loaded (database {config.database_path}, "
              f"data {config.data_path})"),
        check_ffmpeg(),
        *check_packages(),
        check_data_dir(config),
        check_database(config),
        check_model(config, model or config.models.default),
        *check_tokens(config),
    ]
    for check in checks:
        mark = "ok  " if check.ok else ("warn" if check.warning else "FAIL")
        out(f"[{mark}] {check.name}: {check.detail}")
        if not check.ok and check.fix:
            out(f"       fix: {check.fix}")
    failed = [c for c in checks if not c.ok and not c.warning]
    out("All checks passed." if not failed else f"{len(failed)} check(s) failed.")
    return 1 if failed else 0


def check_ffmpeg() -> Check:
    path = shutil.which("ffmpeg")
    if path is None:
        return Check("ffmpeg", False, "not found on PATH",
                     "sudo apt-get install -y ffmpeg  (macOS: brew install ffmpeg)")
    try:
        first = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=10,
                               check=False).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return Check("ffmpeg", False, f"{path} does not run", "reinstall ffmpeg")
    return Check("ffmpeg", True, first)


def check_packages() -> list[Check]:
    results = []
    for name in ("torch", "audiocraft", "discord", "slack_bolt", "aiosqlite", "pydub"):
        try:
            module = importlib.import_module(name)
            version = getattr(module, "__version__", "")
            results.append(Check(f"package {name}", True, f"importable {version}".strip()))
        except Exception as exc:  # any import failure is worth reporting, not raising
            results.append(Check(f"package {name}", False, f"cannot import ({exc})",
                                 "run scripts/install.sh (see README)"))
    return results


def check_data_dir(config: Config) -> Check:
    folder = config.data_path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".doctor-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return Check("data folder", False, f"{folder} is not writable ({exc.strerror})",
                     "set data_dir in the config to a writable folder")
    free_gib = shutil.disk_usage(folder).free / 2**30
    return Check("data folder", True, f"{folder} writable, {free_gib:.1f} GiB free")


def check_database(config: Config) -> Check:
    from bot.app import open_database
    from bot.core.db import LATEST_VERSION

    async def probe() -> int:
        async with open_database(config, migrate=False) as db:
            return await db.version()

    try:
        version = asyncio.run(probe())
    except MusicBotError as exc:
        return Check("database", False, exc.user_message, "check database: in the config")
    if version < LATEST_VERSION:
        return Check("database", not version,
                     f"schema version {version}, latest {LATEST_VERSION}",
                     "musicbot db upgrade (run also upgrades on start)", warning=True)
    return Check("database", True, f"{config.database_path} at schema version {version}")


def check_model(config: Config, key: str) -> Check:
    from bot.app import load_engine

    source = config.model_source(key)
    try:
        engine = load_engine(config, key)
    except MusicBotError as exc:
        return Check(f"model {key}", False, exc.user_message,
                     "use --model debug to test without weights, or point models.catalogue "
                     "at a local checkpoint folder")
    except Exception as exc:  # an unexpected loader crash is still a finding, not a traceback
        return Check(f"model {key}", False, f"{type(exc).__name__}: {exc}",
                     "see README, Troubleshooting")
    noise = " (random weights: output is noise)" if engine.noise else ""
    return Check(f"model {key}", True,
                 f"{source} loads on {engine.device} in {engine.load_s:.1f} s{noise}")


def check_tokens(config: Config) -> list[Check]:
    from bot.app import missing_chat_credentials

    secrets = config.secrets
    checks = []
    if secrets.discord_token:
        checks.append(Check("discord", True, "DISCORD_TOKEN is set"))
    if secrets.slack_bot_token:
        shape_ok = secrets.slack_bot_token.reveal().startswith("xoxb-")
        checks.append(Check("slack", shape_ok, "SLACK_BOT_TOKEN is set" + (
            "" if shape_ok else " but does not start with xoxb-"),
            "use the Bot User OAuth Token from the app's OAuth & Permissions page"))
    for note in missing_chat_credentials(config):
        checks.append(Check("chat", False, note, "see README, 'Connecting Discord and Slack'; "
                            "without tokens `musicbot run` starts the console", warning=True))
    if os.environ.get("HF_HUB_OFFLINE"):
        checks.append(Check("hub", True, "HF_HUB_OFFLINE is set: models load from the cache only"))
    return checks
