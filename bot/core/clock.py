"""The clock every process of one database shares: the database server's.

Leases are written by one machine (``now + lease_s``) and judged expired by another; with
several machines on one PostgreSQL, a machine whose clock runs behind would write leases
that others see as lapsed (its jobs re-rendered), and one ahead would judge live leases
lapsed. :class:`SharedClock` is the process's clock plus its measured offset from the
PostgreSQL server's clock (``clock_timestamp()``, taken at start and every
:data:`SYNC_EVERY_S`), so every process of the deployment reads the same time whatever its
own clock says. Offsets under :data:`IGNORED_OFFSET_S` (NTP-disciplined machines) are
ignored: they are far below any lease, and the clock stays exactly the one injected.
SQLite has one machine and one clock: nothing to measure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bot.core.db import Database

log = logging.getLogger(__name__)

IGNORED_OFFSET_S = 0.5
"""Offsets smaller than this are left alone (half a second against leases of 30 s)."""

SYNC_EVERY_S = 60.0
"""How often the offset is measured again (a drifting clock drifts slowly)."""


_MEASURED: dict[tuple[Callable[[], float], str], tuple[float, float]] = {}
"""(clock, database) → (offset, when measured, monotonic): the services of one process that
share a clock and a database share one measure, so their times agree to the microsecond
(two measures differ by the round trip's jitter)."""


class SharedClock:
    """``clock() + offset``, where ``offset`` = the database server's clock minus ``clock``'s
    (a test's simulated clock is moved onto the server's time line the same way)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.offset = 0.0

    def __call__(self) -> float:
        return self._clock() + self.offset

    async def sync(self, db: Database) -> None:
        """Measure the offset, unless this process measured it less than
        :data:`SYNC_EVERY_S` ago for this clock and database."""
        key = (self._clock, repr(db))
        known = _MEASURED.get(key)
        if known is not None and time.monotonic() - known[1] < SYNC_EVERY_S:
            self.offset = known[0]
            return
        before = self._clock()
        server = await db.server_time()
        if server is None:
            return  # SQLite: the machine's own clock is the only one
        measured = server - (before + self._clock()) / 2
        offset = measured if abs(measured) >= IGNORED_OFFSET_S else 0.0
        if offset and abs(offset - self.offset) >= IGNORED_OFFSET_S:
            log.warning("this machine's clock is %.1f s %s the database server's; musicbot "
                        "uses the server's time for leases and timestamps (check NTP)",
                        abs(offset), "behind" if offset > 0 else "ahead of")
        _MEASURED[key] = (offset, time.monotonic())
        self.offset = offset
