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
The same shape as a group commit, for a read. Measured in docs/performance.md.
"""

from __future__ import annotations

import asyncio

from bot.core import jobs
from bot.core.db import Database


class QueuePlaces:
    """:meth:`place` = :func:`bot.core.jobs.backlog` of a committed job, scans shared."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._waiting: dict[int, list[asyncio.Future[jobs.Backlog]]] = {}
        self._scanner: asyncio.Task[None] | None = None

    async def place(self, job_id: int) -> jobs.Backlog:
        """The job's place, the lengths ahead of it and the running jobs' lengths."""
        answer: asyncio.Future[jobs.Backlog] = asyncio.get_running_loop().create_future()
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
            for job_id, answers in waiting.items():
                result = jobs.place_in(rows, job_id)
                for answer in answers:
                    if not answer.done():  # a request cancelled meanwhile
                        answer.set_result(result)
