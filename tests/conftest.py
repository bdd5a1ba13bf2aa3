"""Test tiers for the whole suite.

The fast tier (unit, core, generation with the debug model) is what ``./scripts/test.sh`` runs
by default; the slow tier (subprocesses, fault injection, end to end against the fake chat
servers) runs with ``./scripts/test.sh --all`` and in CI. A test is slow when it lives under one
of :data:`SLOW_PATHS` or carries ``@pytest.mark.slow`` itself; select with ``-m slow`` or
``-m "not slow"``.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from pathlib import Path
from types import FrameType

import pytest

from tests import pg

TESTS = Path(__file__).resolve().parent

SLOW_PATHS: tuple[str, ...] = (
    "e2e/",
    "process/",
    "app/test_cli.py",
)
"""Paths relative to ``tests/`` whose tests are slow: a folder ends with ``/``."""


def is_slow_path(path: Path) -> bool:
    """True when a test file lies in the slow tier by its location."""
    try:
        rel = path.resolve().relative_to(TESTS).as_posix()
    except ValueError:  # a test file outside tests/ (named on the command line)
        return False
    return any(rel == slow or (slow.endswith("/") and rel.startswith(slow))
               for slow in SLOW_PATHS)


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (scripts/test.sh's time limit, CI cancelling) ends the run like Ctrl-C: pytest
    # prints where each test stood and the session's clean-up stops the PostgreSQL server,
    # instead of dying silently and leaving the server behind.
    signal.signal(signal.SIGTERM, _interrupted)
    config.addinivalue_line(
        "markers", "sqlite_only: about SQLite itself (file locks, WAL, the file on disk); "
        "skipped when MUSICBOT_TEST_DB=postgres")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    pg.stop_server()  # the throw-away PostgreSQL cluster, if this run started one


def pytest_unconfigure(config: pytest.Config) -> None:
    """Name the threads that would keep the interpreter from exiting, with their stacks.

    A non-daemon thread a test left running makes pytest hang after its summary line;
    printed here, the run's log says which one (scripts/test.sh's time limit ends it).
    """
    frames = sys._current_frames()
    left = [t for t in threading.enumerate()
            if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    for thread in left:
        frame = frames.get(thread.ident or 0)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        print(f"\nthread left running at exit: {thread.name}\n{stack}", file=sys.stderr)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark slow tests by location, then run the fast tier first.

    Running fast tests first means a broken unit shows up in seconds, before the end-to-end
    tests spend minutes; the sort is stable, so the order inside each tier is unchanged.
    """
    for item in items:
        if is_slow_path(Path(item.path)):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)
    if pg.wanted():
        skip = pytest.mark.skip(reason="about SQLite itself (MUSICBOT_TEST_DB=postgres)")
        for item in items:
            if item.get_closest_marker("sqlite_only") is not None:
                item.add_marker(skip)
