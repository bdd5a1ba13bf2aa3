"""Job changes made by other processes, read from the rows, for this process's frontends.

In one process (``musicbot run``) every change reaches the member's frontend as an in-process
event. When the worker runs elsewhere (``musicbot worker``), its "started", "progress",
"failed" and "cancelled" events have no frontend there; this relay polls the job rows of the
platforms this process serves every ``*.progress_edit_interval_s`` (the pace a platform lets
a message be edited at anyway) and emits the changes it has not seen, through the same
:class:`~bot.core.events.Notifier`, so frontends render them exactly as local events. "done"
needs no relay: delivery runs where the frontends run. Progress comes from the ``progress``
column the worker writes (migration 9).

It listens to the notifier too: what this process emitted itself is never emitted again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.core import jobs
from bot.core.db import Database
from bot.core.events import Notifier
from bot.core.models import EventKind, Job, JobEvent, JobState

log = logging.getLogger(__name__)

LIVE = (EventKind.STARTED, EventKind.PROGRESS)
ENDED = (EventKind.FAILED, EventKind.CANCELLED, EventKind.DONE, EventKind.UNDELIVERED)
FORGET_AFTER_S = 600.0
"""How long a settled job is remembered (longer than any clock skew we tolerate)."""


@dataclass
class _Seen:
    kind: EventKind
    attempts: int
    progress: float
    at: float


class EventRelay:
    """Emits other processes' changes to the jobs of this process's platforms."""

    def __init__(
        self, db: Database, notifier: Notifier, *, owner: str, interval_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.owner = owner
        self.interval_s = interval_s
        self._notifier = notifier
        self._clock = clock
        self._seen: dict[int, _Seen] = {}
        self._since: float | None = None
        self.relayed = 0
        """Events this relay emitted (for tests and metrics)."""
        notifier.listeners.append(self.on_event)

    def on_event(self, event: JobEvent) -> None:
        """Notifier listener: remember the latest change of each job, wherever it came from."""
        self._seen[event.job.id] = _Seen(event.kind, event.job.attempts, event.progress,
                                         self._clock())

    async def poll(self) -> int:
        """One look at the rows; returns how many events were emitted."""
        platforms = sorted(self._notifier.frontends)
        if not platforms:
            return 0
        now = self._clock()
        first = self._since is None
        since = (now if self._since is None else self._since) - max(60.0, 4 * self.interval_s)
        changed = await self._changed_jobs(platforms, since)
        self._since = now
        emitted = 0
        for job, progress in changed:
            event = None if first else self._event_for(job, progress, now)
            if event is None:
                if first:
                    self.on_event(JobEvent(_kind_of(job), job, progress=progress))
                continue
            self._notifier.emit(event)
            emitted += 1
        self.relayed += emitted
        self._forget_old(now)
        return emitted

    async def run_forever(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception:
                log.warning("relaying job changes failed; retrying", exc_info=True)
            await asyncio.sleep(self.interval_s)

    async def _changed_jobs(self, platforms: list[str], since: float) -> list[tuple[Job, float]]:
        marks = ",".join("?" * len(platforms))
        watched = [job_id for job_id, seen in self._seen.items() if seen.kind in LIVE]
        among = f" OR j.id IN ({','.join('?' * len(watched))})" if watched else ""
        live = f"WHERE a.platform IN ({marks}) AND (j.state = 'running'{among})"
        # A query of its own, so that it reads only the recent end of jobs_by_finish
        # (migration 9) instead of every failed job there ever was.
        ended = (f"WHERE j.state IN ('failed', 'cancelled') AND j.finished_at >= ? "
                 f"AND a.platform IN ({marks})")
        async with self.db.reader_snapshot() as conn:
            found = await jobs.select(conn, live, [*platforms, *watched])
            seen_ids = {job.id for job in found}
            found += [job for job in await jobs.select(conn, ended, [since, *platforms])
                      if job.id not in seen_ids]
            marks_ids = ",".join("?" * len(found))
            rows = await conn.execute_fetchall(
                f"SELECT id, progress FROM jobs WHERE id IN ({marks_ids})",
                [j.id for j in found]) if found else []
        progress = {int(r[0]): float(r[1] or 0.0) for r in rows}
        return [(job, progress.get(job.id, 0.0)) for job in found]

    def _event_for(self, job: Job, progress: float, now: float) -> JobEvent | None:
        seen = self._seen.get(job.id)
        if job.state is JobState.RUNNING:
            if job.owner == self.owner:
                return None  # ours: its events were emitted here already
            if seen is None or seen.kind not in LIVE or seen.attempts != job.attempts:
                return JobEvent(EventKind.STARTED, job)
            if progress > seen.progress:
                return JobEvent(EventKind.PROGRESS, job, progress=progress,
                                eta_s=_eta(job, progress, now))
            return None
        if job.state is JobState.QUEUED and seen is not None and seen.kind in LIVE:
            return JobEvent(EventKind.REQUEUED, job, message=job.error or "")
        if job.state in (JobState.FAILED, JobState.CANCELLED):
            if seen is not None and seen.kind in ENDED:
                return None
            kind = EventKind.FAILED if job.state is JobState.FAILED else EventKind.CANCELLED
            return JobEvent(kind, job, refunded=job.refunded, message=job.error or "")
        if seen is not None and seen.kind in LIVE:  # rendered: delivery takes it from here
            self._seen.pop(job.id, None)
        return None

    def _forget_old(self, now: float) -> None:
        old = [job_id for job_id, seen in self._seen.items()
               if seen.kind not in LIVE and now - seen.at > FORGET_AFTER_S]
        for job_id in old:
            del self._seen[job_id]


def _kind_of(job: Job) -> EventKind:
    return {JobState.RUNNING: EventKind.STARTED, JobState.FAILED: EventKind.FAILED,
            JobState.CANCELLED: EventKind.CANCELLED}.get(job.state, EventKind.QUEUED)


def _eta(job: Job, progress: float, now: float) -> float | None:
    """Seconds left, from how long this attempt took so far (no speed data here)."""
    if job.started_at is None or progress <= 0:
        return None
    return max(0.0, (now - job.started_at) * (1 - progress) / progress)
