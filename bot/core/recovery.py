"""Recovery of jobs whose process died: re-queue them, or stop a job that keeps killing it.

Runs in every process that renders, at start-up and then every few seconds. It touches only
running jobs whose lease expired (or whose owner is known dead, see
:func:`bot.core.leases.owner_is_dead`) — never a live process's job, and never a rendered one:
a track that exists is delivered, not re-made. A process death does not spend the attempts of
the jobs it was running; it is counted in ``crashes`` instead, and a job that was running at
``generation.max_crashes`` deaths is failed and refunded alone (the poison job).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.config import Config
from bot.core import jobs
from bot.core.bank import Bank
from bot.core.db import Database
from bot.core.events import Notifier
from bot.core.leases import owner_is_dead
from bot.core.models import EventKind, Job, JobEvent, JobState

log = logging.getLogger(__name__)

CRASH_MESSAGE = "the bot stopped while making it"


@dataclass
class RecoveryReport:
    """What one recovery pass did."""

    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.requeued or self.failed or self.cancelled)


class Recovery:
    """Takes over the running jobs of dead processes."""

    # Alike by shape only to other constructors (duplicates): plain assignments, nothing to share.
    def __init__(
        self, config: Config, db: Database, notifier: Notifier, *,
        work_available: asyncio.Event, clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.db = db
        self._notifier = notifier
        self._work_available = work_available
        self._clock = clock

    async def recover(self) -> RecoveryReport:
        """One pass: expire dead owners' leases, then settle every orphaned running job."""
        report = RecoveryReport()
        async with self.db.write() as conn:
            for owner in await jobs.running_owners(conn):
                if owner_is_dead(owner):
                    await jobs.expire_owner(conn, owner)
            orphans = await jobs.orphaned(conn, self._clock())
        for job in orphans:
            try:
                await self._recover_one(job, report)
            except Exception:  # one bad row must never stop the bot from starting
                log.exception("could not recover job %d; will try again", job.id)
        if report.requeued:
            self._work_available.set()
        if report:
            log.info("recovered jobs of stopped processes: requeued %s, failed %s, "
                     "cancelled %s", report.requeued, report.failed, report.cancelled)
        return report

    async def run_forever(self) -> None:
        """Recover now and then every ``lease_s / 2``."""
        interval = self.config.generation.lease_s / 2
        while True:
            try:
                await self.recover()
            except Exception:
                log.warning("recovery pass failed; retrying", exc_info=True)
            await asyncio.sleep(interval)

    async def _recover_one(self, job: Job, report: RecoveryReport) -> None:
        now = self._clock()
        crashes = job.crashes + 1
        poison = crashes >= self.config.generation.max_crashes
        async with self.db.write() as conn:
            if not job.cancel_requested and not poison:
                again = await jobs.requeue(conn, job.id, error=CRASH_MESSAGE,
                                           count_attempt=False, crashed=True)
                if again is None:
                    return  # taken over or settled meanwhile
                report.requeued.append(job.id)
                event = JobEvent(EventKind.REQUEUED, again, message=CRASH_MESSAGE,
                                 position=await jobs.position(conn, job.id))
            else:
                state = JobState.CANCELLED if job.cancel_requested else JobState.FAILED
                reason = "cancelled" if job.cancel_requested else (
                    f"the music model stopped {crashes} times on this request, so it was "
                    "abandoned")
                ended = await Bank.end_refunded(conn, job.id, state, error=reason, now=now)
                if ended is None:
                    return
                await conn.execute_fetchall("UPDATE jobs SET crashes = ? WHERE id = ?",
                                            (crashes, job.id))
                (report.cancelled if job.cancel_requested else report.failed).append(job.id)
                kind = EventKind.CANCELLED if job.cancel_requested else EventKind.FAILED
                event = JobEvent(kind, ended, refunded=ended.refunded, message=reason)
        self._notifier.emit(event)
