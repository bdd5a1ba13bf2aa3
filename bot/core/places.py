"""Queue places for receipts: one scan of the fair queue answers every request waiting.

A receipt shows the new job's place and ETA, which takes a walk over the whole fair queue
(:func:`bot.core.jobs.queue_snapshot`). Fifty members ordering at once made fifty walks, one
behind the other on SQLite's reader connection (most of the HTTP API's accept latency under
load), and on PostgreSQL one query per charge (the database's largest cost per charge).
:class:`QueuePlaces` runs one walk at a time (one PostgreSQL query; on SQLite ~2 ms on the
loop's thread at a depth of 500); every request that asks meanwhile is answered by the next
walk (each walk starts after the asking job committed, so every waiter's job is in it).

Why on SQLite's loop thread and not its reader thread: the sqlite3 module gives up and takes
back the GIL at every row, and while the model renders each of those waits behind the
rendering threads — the same walk took 60-90 ms there (the HTTP API's accept latency was
that wait; docs/performance.md). The queue is bounded by ``limits.max_queue``.
The same shape as a group commit, for a read. Each walk also computes every waiting job's
ETA in one pass (:meth:`bot.core.eta.SpeedEstimator.etas`): a receipt's own walk and replay
of the jobs ahead of it cost O(depth) each, a quarter of an accept's CPU at a depth of 500.
Measured in docs/performance.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from bot.core import jobs
from bot.core.db import Database
from bot.core.eta import SpeedEstimator

Spot = tuple[int, float | None]
"""A committed job's 1-based place in the queue (0: not waiting any more) and the seconds
until it is made (None: no speed measured yet)."""


class QueuePlaces:
    """:meth:`place`: a committed job's :data:`Spot`, queue walks shared."""

    def __init__(self, db: Database, speed: SpeedEstimator) -> None:
        self.db = db
        self.speed = speed
        self._waiting: dict[int, list[asyncio.Future[Spot]]] = {}
        self._scanner: asyncio.Task[None] | None = None

    async def place(self, job_id: int) -> Spot:
        """The job's place in the fair queue and its ETA."""
        answer: asyncio.Future[Spot] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(job_id, []).append(answer)
        if self._scanner is None or self._scanner.done():
            self._scanner = asyncio.create_task(self._scan_while_asked(), name="queue-places")
        return await answer

    async def _scan_while_asked(self) -> None:
        while self._waiting:
            waiting, self._waiting = self._waiting, {}
            try:
                rows = jobs.queue_rows(await self.db.fetchall(jobs.QUEUE_SNAPSHOT))
            except Exception as exc:  # each waiting request fails as its own read would
                for answers in waiting.values():
                    for answer in answers:
                        if not answer.done():
                            answer.set_exception(exc)
                continue
            spots = self._spots(rows, waiting)
            for job_id, answers in waiting.items():
                for answer in answers:
                    if not answer.done():  # a request cancelled meanwhile
                        answer.set_result(spots[job_id])

    def _spots(self, rows: jobs.QueueRows, job_ids: Iterable[int]) -> dict[int, Spot]:
        queued, running = jobs.queue_lengths(rows)
        # queued rows come first in a snapshot, so a row's number is its place
        place_of = {job_id: place for place, (part, job_id, _) in enumerate(rows, start=1)
                    if part == 0}
        places = {job_id: place_of.get(job_id, 0) for job_id in job_ids}
        etas = self.speed.etas(queued, running, places.values())
        return {job_id: (place, etas[place]) for job_id, place in places.items()}
