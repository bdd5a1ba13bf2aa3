"""The worker's side of the core: claim jobs, report progress, and settle each attempt.

The worker knows only :class:`bot.core.ports.WorkerPort`; this is its implementation. Every
claimed job leaves through exactly one of :meth:`rendered`, :meth:`fail`, :meth:`release` or
:meth:`finish_cancelled`, each one conditional ``UPDATE`` (plus the refund, in the same
transaction) that also checks this process still owns the job — a process whose lease
lapsed cannot settle a job another process took over.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import replace
from functools import partial
from typing import TypeVar, cast

from bot.config import Config
from bot.core import faults, jobs
from bot.core.bank import Bank
from bot.core.db import Database, DatabaseBusy, DatabaseError
from bot.core.errors import JobNotFound
from bot.core.eta import SpeedEstimator
from bot.core.events import Notifier
from bot.core.models import EventKind, Job, JobEvent, JobState, Track
from bot.core.sharing import share_on_render
from bot.core.storage import DirectoryStore, StorageError, TrackStore

log = logging.getLogger(__name__)

T = TypeVar("T")


class Settlement:
    """Claims and settles jobs for the worker of this process (owner ``owner``)."""

    # Alike by shape only to other constructors (duplicates): plain assignments, nothing to share.
    def __init__(
        self, config: Config, db: Database, notifier: Notifier, speed: SpeedEstimator, *,
        owner: str, clock: Callable[[], float] = time.time, store: TrackStore | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.owner = owner
        self._notifier = notifier
        self._speed = speed
        self.store: TrackStore = store or DirectoryStore(config.tracks_path)
        self._clock = clock
        self._stop_flags: set[int] = set()
        self._held: set[int] = set()
        """Running jobs this process claimed and has not settled: the heartbeat renews
        exactly these leases (plus its deliveries'), so a job whose settling was given up
        is left to lapse and to recovery instead of staying ``running`` forever."""
        self._flags_lock = threading.Lock()
        self.work_available = asyncio.Event()
        """Set when a job may be waiting (a hint: the worker also polls)."""
        self.rendered_ready = asyncio.Event()
        """Set when a track entered the delivery outbox (wakes the delivery stage)."""

    # ------------------------------------------------------------------ claiming

    async def claim(
        self, max_batch: int, platforms: Collection[str] | None = None, *,
        batch_key: str | None = None, alone: bool = True, exclude: Collection[str] = (),
    ) -> list[Job]:
        """Atomically lease up to ``max_batch`` compatible queued jobs (fair across members);
        see :func:`bot.core.jobs.claim` for ``batch_key`` and ``alone``."""
        async with self.db.write() as conn:
            claimed = await jobs.claim(conn, max(1, max_batch), self._clock(), owner=self.owner,
                                       lease_s=self.config.generation.lease_s,
                                       platforms=platforms, batch_key=batch_key, alone=alone,
                                       exclude=exclude)
        with self._flags_lock:
            self._held.update(job.id for job in claimed)
        for job in claimed:
            faults.crash_point("claimed", job.params.prompt)
            self._notifier.emit(JobEvent(EventKind.STARTED, job))
        return claimed

    async def has_queued(self, exclude: Collection[str] = (), only: str | None = None) -> bool:
        """Cheap read for the worker's poll: is anything queued (of a batch key not in
        ``exclude``; of batch key ``only``)? It takes no write lock and computes no fair
        order, so an idle or busy poll stays cheap (a claim ranks the whole queue)."""
        marks = ",".join("?" * len(exclude))
        other = f" AND batch_key NOT IN ({marks})" if exclude else ""
        other += " AND batch_key = ?" if only is not None else ""
        row = await self.db.fetchone(
            f"SELECT 1 FROM jobs WHERE state = 'queued'{other} LIMIT 1",
            (*exclude, *(() if only is None else (only,))))
        return row is not None

    # ------------------------------------------------------------------ during generation

    async def report_progress(self, job: Job, fraction: float) -> None:
        """Tell the job's frontend how far generation is (0..1)."""
        fraction = min(1.0, max(0.0, fraction))
        faults.crash_point("generating", job.params.prompt)
        eta = self._speed.eta_running(job.params.duration * (1 - fraction))
        self._notifier.emit(JobEvent(EventKind.PROGRESS, job, progress=fraction, eta_s=eta))
        if job.destination.platform not in self._notifier.frontends:
            # The member's frontend runs in another process: it reads progress from the row.
            try:
                async with self.db.write() as conn:
                    await jobs.set_progress(conn, job.id, owner=self.owner, progress=fraction,
                                            now=self._clock())
            except Exception:  # progress is a nicety: the job goes on without it
                log.warning("could not record the progress of job %d", job.id, exc_info=True)

    def cancel_requested(self, job_id: int) -> bool:
        """Whether the job must stop (cancel asked, or lease lost). Safe from any thread."""
        with self._flags_lock:
            return job_id in self._stop_flags

    def request_stop(self, job_id: int) -> None:
        with self._flags_lock:
            self._stop_flags.add(job_id)

    def leases_renewed(self, held: dict[int, bool]) -> None:
        """Heartbeat result: raise stop flags for cancels asked from any process."""
        with self._flags_lock:
            self._stop_flags.update(job_id for job_id, cancel in held.items() if cancel)

    def record_speed(self, audio_seconds: float, wall_seconds: float, batch_size: int) -> None:
        """Feed a finished batch's timing into the ETA estimate."""
        self._speed.record(audio_seconds, wall_seconds, batch_size)

    async def source_track(self, job_id: int) -> str | None:
        """Path of a job's stored track (what an extension continues), if any."""
        row = await self.db.fetchone("SELECT track_path FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise JobNotFound(job_id)
        recorded = cast("str | None", row[0])
        if not recorded:
            return None
        here = await self.store.local_file(recorded)  # the worker may be on another machine
        return str(here) if here is not None else recorded

    async def clip_file(self, path: str) -> str | None:
        """A member's stored clip on this machine (fetched from the track store if the
        frontends process that took it runs elsewhere); None once it is gone."""
        here = await self.store.local_file(path)
        return str(here) if here is not None else None

    # ------------------------------------------------------------------ settling

    def held_jobs(self) -> list[int]:
        """Running jobs this process is working on (their leases are renewed)."""
        with self._flags_lock:
            return sorted(self._held)

    async def rendered(self, job: Job, track: Track) -> Job:
        """The track is on disk: commit it and hand the job to the delivery outbox.

        A job whose cancel was asked meanwhile is cancelled and refunded instead.
        """
        return await self._persist([job.id], lambda: self._rendered(job, track))

    async def fail(self, job_id: int, message: str, retryable: bool = False) -> Job:
        """Report a failed attempt: retry if allowed, else fail and refund exactly once."""
        return await self._persist([job_id], lambda: self._fail(job_id, message, retryable))

    async def release(self, job_ids: Iterable[int]) -> None:
        """Put this process's running jobs back in the queue, no attempt spent, no money moved.

        A released job whose cancel was requested is cancelled and refunded instead.
        """
        for job_id in job_ids:
            await self._persist([job_id], partial(self._release, job_id))
        self.work_available.set()

    async def finish_cancelled(self, job_id: int) -> Job:
        """A running job stopped on request: cancelled, refunded exactly once."""
        return await self._persist([job_id], lambda: self._finish_cancelled(job_id))

    async def _persist(self, job_ids: list[int], step: Callable[[], Awaitable[T]]) -> T:
        """Run one settling step; while the database cannot be reached or stays locked, try
        again, for up to one lease period.

        Safe to repeat: every step is a conditional statement that checks state and owner,
        so a step whose commit went through but whose answer was lost is refused (changes
        nothing) the second time. Given up, the jobs leave :meth:`held_jobs`: their leases
        lapse and recovery re-queues them (or fails and refunds them) in whichever process
        reaches the database — never a job left ``running`` for good.
        """
        pause, waited = 0.2, 0.0
        try:
            while True:
                try:
                    return await step()
                except (DatabaseError, DatabaseBusy) as exc:
                    if waited + pause > self.config.generation.lease_s:
                        log.error("could not settle job(s) %s: %s; leaving them to recovery",
                                  job_ids, exc)
                        raise
                    log.warning("settling job(s) %s failed (%s); retrying in %.1f s",
                                job_ids, exc, pause)
                    await asyncio.sleep(pause)
                    waited += pause
                    pause = min(pause * 2, 5.0)
        finally:
            with self._flags_lock:
                self._held.difference_update(job_ids)

    async def _rendered(self, job: Job, track: Track) -> Job:
        if self.cancel_requested(job.id):
            return await self._finish_cancelled(job.id)
        try:
            track = await self.store.save(track)  # reachable by every frontends process first
        except StorageError as exc:
            log.warning("storing job %d's track failed: %s", job.id, exc.user_message)
            return await self._fail(job.id, "the finished track could not be stored",
                                    retryable=True)
        async with self.db.write() as conn:
            done = await jobs.mark_rendered(conn, job.id, owner=self.owner, track=track,
                                            now=self._clock())
            if done is not None:  # the community's default may give it a page at once
                done = replace(done, share_id=await share_on_render(conn, self.config, done))
            current = done or await jobs.get(conn, job.id)
        assert current is not None
        if done is None and current.state is JobState.RUNNING and current.cancel_requested:
            return await self._finish_cancelled(job.id)
        faults.crash_point("rendered", job.params.prompt)
        if done is not None:
            self.rendered_ready.set()
        self._forget(job.id)
        return current

    async def _fail(self, job_id: int, message: str, retryable: bool) -> Job:
        now = self._clock()
        event: JobEvent | None = None
        async with self.db.write() as conn:
            job = await jobs.get(conn, job_id)
            if job is None:
                raise JobNotFound(job_id)
            if retryable and job.attempts < job.max_attempts:
                again = await jobs.requeue(conn, job_id, error=message, count_attempt=True,
                                           owner=self.owner)
                if again is not None:
                    event = JobEvent(EventKind.REQUEUED, again, message=message,
                                     position=await jobs.position(conn, job_id))
            if event is None:
                state = JobState.CANCELLED if job.cancel_requested else JobState.FAILED
                ended = await Bank.end_refunded(conn, job_id, state, error=message, now=now,
                                                owner=self.owner)
                if ended is not None:
                    kind = EventKind.CANCELLED if job.cancel_requested else EventKind.FAILED
                    event = JobEvent(kind, ended, refunded=ended.refunded, message=message)
        self._after(event)
        current = event.job if event is not None else job  # unchanged: settled elsewhere
        if current.state.terminal or current.state is JobState.QUEUED:
            self._forget(job_id)
        return current

    async def _release(self, job_id: int) -> None:
        async with self.db.write() as conn:
            again = await jobs.requeue(conn, job_id, error=None, count_attempt=False,
                                       owner=self.owner)
            place = await jobs.position(conn, job_id) if again else 0
        if again is not None:
            self._notifier.emit(JobEvent(EventKind.REQUEUED, again, position=place))
            self._forget(job_id)
        else:  # cancel requested (here or in another process), or no longer ours
            await self._finish_cancelled(job_id)

    async def _finish_cancelled(self, job_id: int) -> Job:
        now = self._clock()
        async with self.db.write() as conn:
            ended = await Bank.end_refunded(conn, job_id, JobState.CANCELLED,
                                            error="cancelled", now=now, owner=self.owner)
            current = ended or await jobs.get(conn, job_id)
        if current is None:
            raise JobNotFound(job_id)
        if ended is not None:
            self._notifier.emit(JobEvent(EventKind.CANCELLED, ended, refunded=ended.refunded))
        self._forget(job_id)
        return current

    def _after(self, event: JobEvent | None) -> None:
        if event is None:
            return
        self._notifier.emit(event)
        if event.kind is EventKind.REQUEUED:
            self.work_available.set()

    def _forget(self, job_id: int) -> None:
        with self._flags_lock:
            self._stop_flags.discard(job_id)

