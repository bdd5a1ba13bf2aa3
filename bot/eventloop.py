"""The event loop a musicbot process runs on: uvloop when installed, else asyncio's own.

uvloop (libuv, the loop asyncpg's authors wrote) does the same work as the standard loop with
about half the CPU per socket event and thread hand-off (aiosqlite's, the model thread's
``call_soon_threadsafe``); on a box whose cores also render music, that CPU is the accept
latency of every request (docs/performance.md). Everything the bot uses (discord.py,
slack-bolt's aiohttp, uvicorn, asyncpg, aiosqlite, subprocesses, signal handlers) runs on
both, and ``ops.event_loop: asyncio`` turns it off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from bot.config import Config
from bot.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(choice: str) -> LoopFactory | None:
    """The factory for ``ops.event_loop`` (None: asyncio's default loop).

    Raises ConfigError when ``uvloop`` is named but not installed.
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("ops.event_loop", "uvloop is not installed (pip install "
                              "uvloop, or set it to auto)") from None
        return None
    return uvloop.new_event_loop


def run(config: Config, main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop the config chooses."""
    try:
        factory = loop_factory(config.ops.event_loop)
    except ConfigError:
        main.close()  # never awaited: say so quietly instead of a RuntimeWarning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        log.debug("event loop: %s", type(runner.get_loop()).__module__)
        return runner.run(main)
