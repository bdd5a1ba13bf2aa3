"""The delivery stage: drains the outbox of rendered tracks to the chat platforms.

Runs in the process that owns the frontends, never on the GPU worker's path: a slow upload
or a platform's rate limit cannot hold the model idle. Each attempt leases the job (so two
processes never upload the same track at once), calls ``Frontend.deliver``, and commits:

- accepted → ``done`` (``delivered_at`` set); the member has the track;
- a retryable refusal → stays ``rendered`` with ``next_delivery_at`` after the next wait of
  ``delivery.retry_delays_s``;
- a final refusal (or the waits are used up) → ``done`` with ``delivery_error``, the member
  is told to fetch it with /track. **No refund**: the track exists, and a timed-out upload
  may have reached the member anyway (docs/guarantees.md).

A crash between the platform's acceptance and the commit leaves the job ``rendered``; its
lease expires and the track is posted again: a repeated message, never a charge or refund.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from bot.config import Config
from bot.core import faults, jobs, takes
from bot.core.db import Database
from bot.core.errors import DeliveryError
from bot.core.events import Notifier
from bot.core.models import EventKind, Job, JobEvent, JobState, Track
from bot.core.ports import Frontend
from bot.core.storage import DirectoryStore, StorageError, TrackStore

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT_S = 300.0
"""Longest one upload may take before it counts as a (retryable) failure."""


class Delivery:
    """Delivers rendered tracks for the frontends registered in ``notifier``."""

    # Alike by shape only to other constructors (duplicates): plain assignments, nothing to share.
    def __init__(
        self, config: Config, db: Database, notifier: Notifier, *, owner: str,
        ready: asyncio.Event, clock: Callable[[], float] = time.time,
        store: TrackStore | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.owner = owner
        self.store: TrackStore = store or DirectoryStore(config.tracks_path)
        self._notifier = notifier
        self._ready = ready
        self._clock = clock
        self.delivered = 0
        """Tracks this process handed to a platform (for tests and metrics)."""
        self.retries = 0
        """Failed uploads this process will try again (for metrics)."""
        self.gave_up = 0
        """Tracks this process stopped trying to post (for metrics)."""
        self._in_flight: set[asyncio.Task[None]] = set()
        self.retry_delays_s = list(config.delivery.retry_delays_s)

    async def deliver_due(self) -> int:
        """Attempt every due delivery once (concurrently, bounded). Returns how many."""
        platforms = set(self._notifier.frontends)
        handled = 0
        while True:
            async with self.db.write() as conn:
                due = await jobs.claim_deliveries(
                    conn, platforms=platforms, owner=self.owner,
                    lease_s=self.config.generation.lease_s, now=self._clock(),
                    limit=self.config.delivery.concurrency)
            if not due:
                return handled
            # Shielded: once a platform may have the file, the outcome must be committed even
            # if this pass is cancelled (shutdown); stop() waits for these.
            tasks = [asyncio.ensure_future(self._attempt(job)) for job in due]
            self._in_flight.update(tasks)
            for task in tasks:
                task.add_done_callback(self._in_flight.discard)
            await asyncio.shield(asyncio.gather(*tasks))
            handled += len(due)

    async def run_forever(self) -> None:
        """Deliver whenever a track is rendered here, and poll for others' tracks."""
        poll = self.config.generation.poll_s
        while True:
            self._ready.clear()
            try:
                await self.deliver_due()
            except Exception:
                log.warning("delivery pass failed; retrying", exc_info=True)
            with contextlib.suppress(TimeoutError):
                # Not wait_for: on Python 3.11 it swallows a cancel that arrives as the event
                # is set, and this loop then never ends (App.stop waited on it for ever).
                async with asyncio.timeout(poll):
                    await self._ready.wait()

    async def stop(self, grace_s: float = 30.0) -> None:
        """Polite stop: let uploads under way finish (up to ``grace_s``), then hand back
        this process's delivery leases so another process may deliver at once."""
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=grace_s)
        async with self.db.write() as conn:
            await jobs.release_all(conn, self.owner)

    async def _attempt(self, job: Job) -> None:
        frontend = self._notifier.frontends.get(job.destination.platform)
        assert job.track is not None, "a rendered job always has its track"
        error: DeliveryError | None = None
        group: list[Job] = []
        try:
            if frontend is None:
                raise DeliveryError(f"the {job.destination.platform} connection is not "
                                    "running")
            if job.group_id is not None:
                group = [await self._with_local_track(member)
                         for member in await self._group_of(job)]
                await asyncio.wait_for(_deliver_group(frontend, group), DELIVERY_TIMEOUT_S)
            else:
                track = await self._local_track(job)
                await asyncio.wait_for(frontend.deliver(job, track), DELIVERY_TIMEOUT_S)
        except DeliveryError as exc:
            error = exc
        except TimeoutError:
            error = DeliveryError("the upload timed out")
        except Exception:
            log.exception("delivery of job %d crashed", job.id)
            error = DeliveryError("the chat platform refused the upload", retryable=False)
        if error is None:
            faults.crash_point("delivering", job.params.prompt)
            await (self._group_delivered(job) if group else self._delivered(job))
        else:
            await self._failed(job, error)

    async def _group_of(self, head: Job) -> list[Job]:
        """Every job of ``head``'s group as it is now (all rendered, failed or cancelled)."""
        assert head.group_id is not None
        async with self.db.reader_snapshot() as conn:
            return await takes.siblings(conn, head.group_id)

    async def _group_delivered(self, head: Job) -> None:
        async with self.db.write() as conn:
            moved = await takes.settle_delivery(conn, head, delivered=True, error=None,
                                                now=self._clock())
        self.delivered += len(moved)
        faults.crash_point("delivered", head.params.prompt)
        for done in moved:
            self._notifier.emit(JobEvent(EventKind.DONE, done, track=done.track))

    async def _with_local_track(self, job: Job) -> Job:
        """``job`` with its track on this machine (a failed take has none to fetch)."""
        if job.track is None or job.state is not JobState.RENDERED:
            return job
        return replace(job, track=await self._local_track(job))

    async def _local_track(self, job: Job) -> Track:
        """The job's track on this machine: the worker that made it may be elsewhere."""
        assert job.track is not None
        try:
            track = await self.store.local(job.track)
        except StorageError as exc:
            raise DeliveryError(f"the track store is unreachable ({exc.user_message})") from exc
        if track is None:
            raise DeliveryError("the track file is missing from the track store",
                                retryable=False)
        return track

    async def _delivered(self, job: Job) -> None:
        async with self.db.write() as conn:
            done = await jobs.mark_delivered(conn, job.id, self._clock())
        self.delivered += 1
        faults.crash_point("delivered", job.params.prompt)
        if done is not None:
            self._notifier.emit(JobEvent(EventKind.DONE, done, track=done.track))

    async def _failed(self, job: Job, error: DeliveryError) -> None:
        delays = self.retry_delays_s
        now = self._clock()
        async with self.db.write() as conn:
            if error.retryable and job.delivery_attempts < len(delays):
                wait = delays[job.delivery_attempts]
                log.warning("delivery of job %d failed, retrying in %g s: %s", job.id, wait,
                            error.reason)
                await jobs.retry_delivery(conn, job.id, owner=self.owner, error=error.reason,
                                          at=now + wait)
                self.retries += 1
                return
            if job.group_id is not None:
                given_up = await takes.settle_delivery(conn, job, delivered=False,
                                                       error=error.reason, now=now)
            else:
                ended = await jobs.give_up_delivery(conn, job.id, error=error.reason, now=now)
                given_up = [ended] if ended is not None else []
        log.warning("gave up delivering job %d: %s", job.id, error.reason)
        self.gave_up += 1
        for ended in given_up:
            self._notifier.emit(JobEvent(EventKind.UNDELIVERED, ended, message=error.reason,
                                         track=ended.track))


async def _deliver_group(frontend: Frontend, group: list[Job]) -> None:
    """One message for the whole group where the frontend can (``deliver_group``), else
    each rendered track on its own (console, web). Failed takes are named, not delivered."""
    made = [job for job in group if job.state is JobState.RENDERED and job.track is not None]
    failed = takes.failed_takes(group)
    together = getattr(frontend, "deliver_group", None)
    if together is not None:
        await together(made, failed)
        return
    for job in made:
        assert job.track is not None
        await frontend.deliver(job, job.track)
