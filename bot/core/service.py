"""The use cases every frontend and the worker call: the only door into accounts and jobs.

Invariants kept here (tests in tests/core prove them):
- a charge and its job row are written in ONE transaction, keyed by an idempotency key;
- every charged job ends ``done`` (delivered) or ``failed``/``cancelled`` with exactly one
  refund — terminal transitions are conditional updates, and the ledger has unique indexes;
- admins act only inside their own community; members only on their own jobs.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import aiosqlite

from bot.config import Config
from bot.core import jobs, ledger
from bot.core.db import Database, fetch_one
from bot.core.errors import (
    DeliveryError,
    InsufficientTokens,
    InvalidRequest,
    JobNotCancellable,
    JobNotFound,
    LimitReached,
    NotAuthorized,
    format_wait,
)
from bot.core.models import (
    SHARED_COMMUNITY,
    AccountKey,
    Actor,
    Destination,
    EventKind,
    GenerationParams,
    Job,
    JobEvent,
    JobState,
    LedgerEntry,
    LedgerKind,
    MusicRequest,
    QueueInfo,
    Receipt,
    Track,
)
from bot.core.ports import Frontend
from bot.core.requests import (
    price,
    validate_amount,
    validate_duration,
    validate_format,
    validate_job_id,
    validate_model,
    validate_request,
    validate_user_id,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepReport:
    """What the start-up sweep did with jobs a crash left ``running``."""

    requeued: list[int]
    failed: list[int]
    cancelled: list[int]


class SpeedEstimator:
    """Moving average of wall seconds per second of audio per job, for ETAs."""

    def __init__(self) -> None:
        self.seconds_per_audio_second: float | None = None

    def record(self, audio_seconds: float, wall_seconds: float, batch_size: int) -> None:
        if audio_seconds <= 0 or batch_size <= 0:
            return
        sample = wall_seconds / (audio_seconds * batch_size)
        old = self.seconds_per_audio_second
        self.seconds_per_audio_second = sample if old is None else 0.7 * old + 0.3 * sample

    def eta(self, audio_seconds_ahead: float) -> float | None:
        if self.seconds_per_audio_second is None:
            return None
        return audio_seconds_ahead * self.seconds_per_audio_second


class MusicService:
    """Accounts, ledger and queue behind one async API (see docs/ARCHITECTURE.md)."""

    delivery_retry_delays: tuple[float, ...] = (2.0, 10.0)
    """Waits between delivery attempts when a frontend reports a retryable DeliveryError."""

    def __init__(self, config: Config, db: Database, *, clock: Callable[[], float] = time.time):
        self.config = config
        self.db = db
        self._clock = clock
        self._frontends: dict[str, Frontend] = {}
        self._cancel_flags: set[int] = set()
        self._cancel_lock = threading.Lock()
        self._event_chains: dict[int, asyncio.Task[None]] = {}
        self.speed = SpeedEstimator()
        self.work_available = asyncio.Event()
        self.available_models: frozenset[str] | None = None
        """Catalogue keys with a loaded engine (set by the app); None accepts the catalogue."""

    # ----------------------------------------------------------------- wiring

    def register_frontend(self, frontend: Frontend) -> None:
        """Route events and deliveries of jobs whose destination is ``frontend.platform``."""
        self._frontends[frontend.platform] = frontend

    def account_key(self, platform: str, community: str, user: str) -> AccountKey:
        """The account a member's tokens live in (shared across communities if configured)."""
        if self.config.economy.shared_balances:
            community = SHARED_COMMUNITY
        return AccountKey(platform, community, user)

    async def start(self) -> SweepReport:
        """Start-up checks: warn on a changed balance scope, then sweep crashed jobs."""
        await self._check_balance_scope()
        return await self.sweep()

    # ----------------------------------------------------------------- members

    def price(self, duration: object, model: object = None, format: object = None) -> int:
        """Price of a track, validating the inputs. Raises InvalidRequest."""
        key = self._loaded(validate_model(self.config, model))
        seconds = validate_duration(self.config, duration, key)
        return price(self.config, seconds, key, validate_format(format, self.config.audio.format))

    async def request_music(
        self, actor: Actor, request: MusicRequest, destination: Destination, idempotency_key: str
    ) -> Receipt:
        """Validate, price, then charge and queue in one transaction.

        A repeated ``idempotency_key`` returns the first job with ``duplicate=True`` and
        charges nothing. Raises InvalidRequest, InsufficientTokens or LimitReached, with
        nothing charged.
        """
        params = validate_request(self.config, request)
        return await self._enqueue(actor, params, destination, idempotency_key)

    async def reroll(
        self, actor: Actor, job_id: object, destination: Destination, idempotency_key: str
    ) -> Receipt:
        """Queue the same request as ``job_id`` with a new random seed (charged again)."""
        original = await self._visible_job(actor, job_id)
        params = replace(original.params, seed=secrets.randbelow(2**31), seed_given=False)
        return await self._enqueue(actor, params, destination, idempotency_key)

    async def extend(
        self, actor: Actor, job_id: object, seconds: object, destination: Destination,
        idempotency_key: str,
    ) -> Receipt:
        """Queue a continuation of a finished job's track by ``seconds`` (priced as new audio)."""
        original = await self._visible_job(actor, job_id)
        delivering = original.state is JobState.RUNNING and original.track_path
        if not (original.state is JobState.DONE or delivering) or not original.track_path:
            raise InvalidRequest("job", f"#{original.id} has no finished track to extend")
        added = validate_duration(self.config, seconds, original.params.model)
        params = replace(original.params, duration=added, continue_from=original.id,
                         seed=secrets.randbelow(2**31), seed_given=False)
        return await self._enqueue(actor, params, destination, idempotency_key)

    async def cancel(self, actor: Actor, job_id: object = None) -> Job:
        """Cancel a queued job (refunded now) or ask the worker to stop a running one.

        ``job_id`` None picks the actor's newest queued or running job.
        """
        job = await self._cancellable_job(actor, job_id)
        now = self._clock()
        async with self.db.write() as conn:
            done = await jobs.finish(conn, job.id, JobState.CANCELLED, now=now, refund=True,
                                     error=f"cancelled by {actor.user}",
                                     from_states=(JobState.QUEUED,))
            if done is not None:
                await self._refund(conn, done, now)
            elif not await jobs.request_cancel(conn, job.id):
                current = await jobs.get(conn, job.id)
                assert current is not None
                raise JobNotCancellable(job.id, current.state.value)
            current = done or await jobs.get(conn, job.id)
        assert current is not None
        if done is not None:
            self._emit(JobEvent(EventKind.CANCELLED, done, refunded=done.refunded))
        else:
            with self._cancel_lock:
                self._cancel_flags.add(job.id)
        return current

    async def balance(self, actor: Actor, member: object = None) -> int:
        """Balance of the actor, or of ``member`` (a user id) in the actor's community."""
        user = actor.user if member is None else validate_user_id("member", member)
        key = self.account_key(actor.platform, actor.community, user)
        async with self.db.write() as conn:
            account = await ledger.ensure_account(conn, key, self.config.economy, self._clock())
        return account.balance

    async def history(self, actor: Actor, limit: int = 10) -> list[Job]:
        """The actor's most recent jobs, newest first."""
        key = self.account_key(actor.platform, actor.community, actor.user)
        return await self._read_jobs(
            "WHERE a.platform = ? AND a.community = ? AND a.user = ? ORDER BY j.id DESC LIMIT ?",
            (key.platform, key.community, key.user, _limit(limit)),
        )

    async def queue(self, actor: Actor) -> QueueInfo:
        """The actor's queued/running jobs with their places, and the queue totals."""
        key = self.account_key(actor.platform, actor.community, actor.user)
        async with self.db.write() as conn:  # one consistent snapshot of positions
            mine = await jobs.select(
                conn, "WHERE a.platform = ? AND a.community = ? AND a.user = ? "
                "AND j.state IN ('queued', 'running') ORDER BY j.id", list(vars_of(key)))
            places = [(job, await jobs.position(conn, job.id)) for job in mine]
            queued = await jobs.count(conn, "state = 'queued'", ())
            running = await jobs.count(conn, "state = 'running'", ())
            ahead = await jobs.seconds_ahead(conn)
        return QueueInfo(places, queued, running, self.speed.eta(ahead))

    async def get_job(self, job_id: object) -> Job:
        job_id = validate_job_id(job_id)
        found = await self._read_jobs("WHERE j.id = ?", (job_id,))
        if not found:
            raise JobNotFound(job_id)
        return found[0]

    async def stored_track(self, actor: Actor, job_id: object) -> tuple[Job, Track]:
        """A finished job's stored file, to send again (``/track``); any job of the community.

        Raises JobNotFound, or InvalidRequest when the job has no file (not finished, or
        deleted after ``audio.retention_days``).
        """
        job = await self._visible_job(actor, job_id)
        path = Path(job.track_path) if job.track_path else None
        if job.state is not JobState.DONE or path is None or not path.is_file():
            why = ("is not finished" if job.state is not JobState.DONE else
                   f"is no longer stored (tracks are kept {self.config.audio.retention_days:g} "
                   "days)")
            raise InvalidRequest("job", f"#{job.id} {why}")
        picture = path.with_suffix(".png")
        return job, Track(
            path=str(path), format=path.suffix.lstrip("."), duration_s=job.params.duration,
            size_bytes=path.stat().st_size, sample_rate=0,
            waveform_path=str(picture) if picture.is_file() else None,
            noise=self.config.model_source(job.params.model) == "debug")

    async def set_status_ref(self, job_id: int, status_ref: str) -> None:
        """Remember the platform id of the message that shows this job's status."""
        async with self.db.write() as conn:
            job = await jobs.get(conn, job_id)
            if job is None:
                raise JobNotFound(job_id)
            destination = replace(job.destination, status_ref=status_ref)
            await jobs.set_destination(conn, job_id, destination)

    # ----------------------------------------------------------------- admins

    async def grant(self, admin: Actor, member: object, amount: object, reason: str = "") -> int:
        """Add tokens to a member of the admin's community. Returns the new balance."""
        key, tokens, note = self._admin_args(admin, member, amount, reason)
        now = self._clock()
        async with self.db.write() as conn:
            account = await ledger.ensure_account(conn, key, self.config.economy, now)
            return await ledger.credit(conn, account.id, tokens, LedgerKind.GRANT, job_id=None,
                                       actor=admin.user, reason=note, now=now)

    async def take(self, admin: Actor, member: object, amount: object, reason: str = "") -> int:
        """Remove tokens from a member; refuses to go below zero. Returns the new balance."""
        key, tokens, note = self._admin_args(admin, member, amount, reason)
        now = self._clock()
        async with self.db.write() as conn:
            account = await ledger.ensure_account(conn, key, self.config.economy, now)
            try:
                return await ledger.debit(conn, account, tokens, LedgerKind.TAKE, job_id=None,
                                          actor=admin.user, reason=note, now=now)
            except InsufficientTokens as exc:
                raise InvalidRequest(
                    "amount", f"the member has only {exc.balance} tokens") from None

    async def set_balance(
        self, admin: Actor, member: object, amount: object, reason: str = ""
    ) -> int:
        """Set a member's balance to ``amount`` (the difference is written to the ledger)."""
        key, tokens, note = self._admin_args(admin, member, amount, reason, allow_zero=True)
        now = self._clock()
        async with self.db.write() as conn:
            account = await ledger.ensure_account(conn, key, self.config.economy, now)
            return await ledger.set_balance(conn, account, tokens, actor=admin.user,
                                            reason=note, now=now)

    async def adjust_balance(
        self, admin: Actor, action: str, member: object, amount: object, reason: str = ""
    ) -> int:
        """``grant``, ``take`` or ``set`` by name (what every admin command dispatches on)."""
        methods = {"grant": self.grant, "take": self.take, "set": self.set_balance}
        if action not in methods:
            raise InvalidRequest("action", "use grant, take or set")
        return await methods[action](admin, member, amount, reason)

    async def ledger(
        self, admin: Actor, member: object = None, limit: int = 20
    ) -> list[LedgerEntry]:
        """Newest ledger entries of a member, or of the whole community (admins only).

        Members may read their own entries.
        """
        user = None if member is None else validate_user_id("member", member)
        if not admin.is_admin and user is None:
            user = admin.user
        if not admin.is_admin and user != admin.user:
            raise NotAuthorized("read other members' ledger")
        key = self.account_key(admin.platform, admin.community, user or admin.user)
        async with self.db.write() as conn:
            return await ledger.entries(conn, platform=key.platform, community=key.community,
                                        user=user, limit=_limit(limit))

    # ----------------------------------------------------------------- worker

    async def claim_batch(self, max_batch: int) -> list[Job]:
        """Atomically claim up to ``max_batch`` compatible queued jobs (fair across members)."""
        async with self.db.write() as conn:
            claimed = await jobs.claim(conn, max(1, max_batch), self._clock())
        for job in claimed:
            self._emit(JobEvent(EventKind.STARTED, job))
        return claimed

    async def report_progress(self, job: Job, fraction: float) -> None:
        """Tell the job's frontend how far generation is (0..1)."""
        fraction = min(1.0, max(0.0, fraction))
        eta = self.speed.eta(job.params.duration * (1 - fraction))
        self._emit(JobEvent(EventKind.PROGRESS, job, progress=fraction, eta_s=eta))

    async def complete(self, job: Job, track: Track) -> Job:
        """Deliver ``track`` through the job's frontend, then mark the job done.

        On a DeliveryError that persists (or any unexpected frontend error) the job fails and
        the member is refunded.
        """
        if self.cancel_requested(job.id):
            return await self.finish_cancelled(job.id)
        # Stored before delivery: a member may press Extend the moment the track appears,
        # before the job is marked done.
        async with self.db.write() as conn:
            await jobs.set_track_path(conn, job.id, track.path)
        error = await self._deliver(job, track)
        if error is not None:
            return await self.fail(job.id, error)
        now = self._clock()
        async with self.db.write() as conn:
            done = await jobs.finish(conn, job.id, JobState.DONE, error=None, now=now,
                                     refund=False, from_states=(JobState.RUNNING,),
                                     track_path=track.path)
            current = done or await jobs.get(conn, job.id)
        assert current is not None
        if done is not None:
            self._emit(JobEvent(EventKind.DONE, done, track=track))
        self._forget_cancel(job.id)
        return current

    async def fail(self, job_id: int, message: str, retryable: bool = False) -> Job:
        """Report a failed attempt: retry if allowed, else fail and refund exactly once."""
        now = self._clock()
        event: JobEvent | None = None
        async with self.db.write() as conn:
            job = await jobs.get(conn, job_id)
            if job is None:
                raise JobNotFound(job_id)
            if retryable and job.attempts < job.max_attempts:
                again = await jobs.requeue(conn, job_id, error=message, count_attempt=True)
                if again is not None:
                    event = JobEvent(EventKind.REQUEUED, again, message=message,
                                     position=await jobs.position(conn, job_id))
            if event is None:
                state = JobState.CANCELLED if job.cancel_requested else JobState.FAILED
                ended = await jobs.finish(conn, job_id, state, error=message, now=now,
                                          refund=True)
                if ended is not None:
                    await self._refund(conn, ended, now)
                    kind = EventKind.CANCELLED if job.cancel_requested else EventKind.FAILED
                    event = JobEvent(kind, ended, refunded=ended.refunded, message=message)
        current = event.job if event is not None else job  # unchanged: already ended before
        if event is not None:
            self._emit(event)
            if event.kind is EventKind.REQUEUED:
                self.work_available.set()
        if current.state.terminal:
            self._forget_cancel(job_id)
        return current

    async def release(self, job_ids: Iterable[int]) -> None:
        """Put running jobs back in the queue without spending an attempt (no money moves).

        A released job whose cancel was requested is cancelled and refunded instead.
        """
        for job_id in job_ids:
            if self.cancel_requested(job_id):
                await self.finish_cancelled(job_id)
                continue
            async with self.db.write() as conn:
                again = await jobs.requeue(conn, job_id, error=None, count_attempt=False)
                place = await jobs.position(conn, job_id) if again else 0
            if again is not None:
                self._emit(JobEvent(EventKind.REQUEUED, again, position=place))
            else:  # cancel requested in the database by an earlier process
                await self.finish_cancelled(job_id)
        self.work_available.set()

    async def finish_cancelled(self, job_id: int) -> Job:
        """A running job stopped on request: cancelled, refunded exactly once."""
        now = self._clock()
        async with self.db.write() as conn:
            ended = await jobs.finish(conn, job_id, JobState.CANCELLED, error="cancelled",
                                      now=now, refund=True)
            if ended is not None:
                await self._refund(conn, ended, now)
            current = ended or await jobs.get(conn, job_id)
        if current is None:
            raise JobNotFound(job_id)
        if ended is not None:
            self._emit(JobEvent(EventKind.CANCELLED, ended, refunded=ended.refunded))
        self._forget_cancel(job_id)
        return current

    def cancel_requested(self, job_id: int) -> bool:
        """Whether a cancel was asked for this running job. Safe to call from any thread."""
        with self._cancel_lock:
            return job_id in self._cancel_flags

    def record_speed(self, audio_seconds: float, wall_seconds: float, batch_size: int) -> None:
        """Feed a finished batch's timing into the ETA estimate."""
        self.speed.record(audio_seconds, wall_seconds, batch_size)

    async def sweep(self) -> SweepReport:
        """Resolve jobs left ``running`` by a crash: re-queue, or fail/cancel and refund."""
        now = self._clock()
        report = SweepReport([], [], [])
        events: list[JobEvent] = []
        async with self.db.write() as conn:
            for job in await jobs.select(conn, "WHERE j.state = 'running'", ()):
                if not job.cancel_requested and job.attempts < job.max_attempts:
                    again = await jobs.requeue(conn, job.id, count_attempt=True,
                                               error="interrupted by a restart")
                    if again is not None:
                        report.requeued.append(job.id)
                        events.append(JobEvent(EventKind.REQUEUED, again))
                    continue
                state = JobState.CANCELLED if job.cancel_requested else JobState.FAILED
                reason = "cancelled" if job.cancel_requested else "interrupted by a restart"
                ended = await jobs.finish(conn, job.id, state, error=reason, now=now, refund=True)
                if ended is not None:
                    await self._refund(conn, ended, now)
                    (report.cancelled if job.cancel_requested else report.failed).append(job.id)
                    kind = EventKind.CANCELLED if job.cancel_requested else EventKind.FAILED
                    events.append(JobEvent(kind, ended, refunded=ended.refunded, message=reason))
        for event in events:
            self._emit(event)
        if report.requeued:
            self.work_available.set()
        if any((report.requeued, report.failed, report.cancelled)):
            log.info("start-up sweep: requeued %s, failed %s, cancelled %s",
                     report.requeued, report.failed, report.cancelled)
        return report

    async def drain_events(self) -> None:
        """Wait until every pending frontend notification has been handed over."""
        while self._event_chains:
            await asyncio.gather(*list(self._event_chains.values()), return_exceptions=True)

    # ----------------------------------------------------------------- internals

    async def _enqueue(
        self, actor: Actor, params: GenerationParams, destination: Destination, key: str
    ) -> Receipt:
        if not isinstance(key, str) or not 0 < len(key) <= 200:
            raise InvalidRequest("request id", "is missing or too long")
        self._loaded(params.model)
        cost = price(self.config, params.duration, params.model, params.format)
        account_key = self.account_key(actor.platform, actor.community, actor.user)
        now = self._clock()
        async with self.db.write() as conn:
            existing = await jobs.by_key(conn, key)
            if existing is not None:
                if existing.account != account_key:
                    raise InvalidRequest("request id", "was already used by someone else")
                return await self._duplicate_receipt(conn, existing)
            account = await ledger.ensure_account(conn, account_key, self.config.economy, now)
            await self._check_limits(conn, account.id, now)
            job_id = await jobs.insert(
                conn, account_id=account.id, params=params, price=cost, idempotency_key=key,
                destination=destination, max_attempts=self.config.generation.max_attempts,
                now=now)
            balance = await ledger.debit(conn, account, cost, LedgerKind.CHARGE, job_id=job_id,
                                         actor=actor.user, reason="music", now=now)
        self.work_available.set()
        job = Job(id=job_id, account=account_key, params=params, state=JobState.QUEUED,
                  price=cost, idempotency_key=key, destination=destination, attempts=0,
                  max_attempts=self.config.generation.max_attempts, error=None,
                  cancel_requested=False, created_at=now, started_at=None, finished_at=None,
                  track_path=None)
        # Queue place is read after the commit, outside the writer lock: it scans the queue.
        place, ahead = await jobs.place(self.db.reader, job_id)
        return Receipt(job, cost, balance, place, self.speed.eta(ahead))

    def _loaded(self, model: str) -> str:
        if self.available_models is not None and model not in self.available_models:
            names = ", ".join(sorted(self.available_models))
            raise InvalidRequest("model", f"'{model}' is not loaded on this bot (available: "
                                 f"{names})")
        return model

    async def _duplicate_receipt(self, conn: aiosqlite.Connection, job: Job) -> Receipt:
        account = await ledger.find_account(conn, job.account)
        place = await jobs.position(conn, job.id)
        return Receipt(job, job.price, account.balance if account else 0, place, None,
                       duplicate=True)

    async def _check_limits(self, conn: aiosqlite.Connection, account_id: int, now: float) -> None:
        limits = self.config.limits
        window = limits.rate_limit
        # One query for every limit: this runs under the writer lock on each /music.
        row = await fetch_one(
            conn,
            "SELECT (SELECT COUNT(*) FROM jobs WHERE account_id = :a "
            "AND state IN ('queued', 'running')), "
            "(SELECT COUNT(*) FROM jobs WHERE state = 'queued'), "
            "(SELECT COUNT(*) FROM jobs WHERE account_id = :a AND created_at > :since), "
            "(SELECT MIN(created_at) FROM jobs WHERE account_id = :a AND created_at > :since)",
            {"a": account_id, "since": now - window.window_s},
        )
        assert row is not None
        mine, queued, recent, oldest = row
        if mine >= limits.max_queued_per_user:
            raise LimitReached("max_queued_per_user", f"You already have {mine} jobs waiting "
                               f"(limit {limits.max_queued_per_user}). Wait for one to finish "
                               "or cancel one.")
        if queued >= limits.max_queue:
            raise LimitReached("max_queue", "The queue is full right now.",
                               retry_after_s=self.speed.eta(await jobs.seconds_ahead(conn)))
        if recent >= window.count:
            retry = oldest + window.window_s - now
            raise LimitReached("rate_limit", f"You can request {window.count} tracks every "
                               f"{format_wait(window.window_s)}.", retry_after_s=retry)

    async def _refund(self, conn: aiosqlite.Connection, job: Job, now: float) -> None:
        if job.refunded <= 0:
            return
        account = await ledger.find_account(conn, job.account)
        assert account is not None
        await ledger.credit(conn, account.id, job.refunded, LedgerKind.REFUND, job_id=job.id,
                            actor="system", reason=job.error or "", now=now)

    async def _deliver(self, job: Job, track: Track) -> str | None:
        """Hand the track to the frontend, retrying; returns a failure reason or None."""
        frontend = self._frontends.get(job.destination.platform)
        if frontend is None:
            return f"the {job.destination.platform} connection is not running"
        delays = list(self.delivery_retry_delays)
        while True:
            try:
                await frontend.deliver(job, track)
                return None
            except DeliveryError as exc:
                if not exc.retryable or not delays:
                    return exc.reason
                log.warning("delivery of job %d failed, retrying: %s", job.id, exc.reason)
                await asyncio.sleep(delays.pop(0))
            except Exception:
                log.exception("delivery of job %d crashed", job.id)
                return "the chat platform refused the upload"

    async def _visible_job(self, actor: Actor, job_id: object) -> Job:
        """A job the actor may act on: in the actor's community (their own or any, for re-roll)."""
        job = await self.get_job(job_id)
        if (job.destination.platform, job.destination.community) != (actor.platform,
                                                                      actor.community):
            raise JobNotFound(job.id)
        return job

    async def _cancellable_job(self, actor: Actor, job_id: object) -> Job:
        if job_id is None or job_id == "":
            key = self.account_key(actor.platform, actor.community, actor.user)
            live = await self._read_jobs(
                "WHERE a.platform = ? AND a.community = ? AND a.user = ? "
                "AND j.state IN ('queued', 'running') ORDER BY j.id DESC LIMIT 1",
                list(vars_of(key)))
            if not live:
                raise JobNotFound("(none active)")
            return live[0]
        job = await self._visible_job(actor, job_id)
        if job.account.user != actor.user and not actor.is_admin:
            raise NotAuthorized("cancel someone else's job")
        if job.state.terminal:
            raise JobNotCancellable(job.id, job.state.value)
        return job

    def _admin_args(
        self, admin: Actor, member: object, amount: object, reason: str, allow_zero: bool = False
    ) -> tuple[AccountKey, int, str]:
        if not admin.is_admin:
            raise NotAuthorized("manage tokens in this community")
        user = validate_user_id("member", member)
        tokens = validate_amount(amount, allow_zero=allow_zero)
        note = " ".join(str(reason or "").split())[:200]
        return self.account_key(admin.platform, admin.community, user), tokens, note

    async def _read_jobs(self, where: str, params: Iterable[object]) -> list[Job]:
        rows = await self.db.fetchall(
            "SELECT j.*, a.platform, a.community, a.user FROM jobs j "
            "JOIN accounts a ON a.id = j.account_id " + where, list(params))
        return [jobs.job_from_row(r) for r in rows]

    async def _check_balance_scope(self) -> None:
        scope = "shared" if self.config.economy.shared_balances else "per-community"
        async with self.db.write() as conn:
            async with conn.execute("SELECT value FROM settings WHERE key = 'balance_scope'") as c:
                row = await c.fetchone()
            if row is not None and row[0] != scope:
                log.warning(
                    "economy.shared_balances changed (%s -> %s): balances are NOT merged or "
                    "wiped; members start from the %s accounts, the old ones stay in the "
                    "ledger and come back if you switch again.", row[0], scope, scope)
            await conn.execute(
                "INSERT INTO settings VALUES ('balance_scope', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (scope,))

    def _emit(self, event: JobEvent) -> None:
        frontend = self._frontends.get(event.job.destination.platform)
        if frontend is None:
            return
        job_id = event.job.id
        previous = self._event_chains.get(job_id)
        task = asyncio.get_running_loop().create_task(_notify(frontend, event, previous))
        self._event_chains[job_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._event_chains.get(job_id) is done:
                del self._event_chains[job_id]

        task.add_done_callback(forget)

    def _forget_cancel(self, job_id: int) -> None:
        with self._cancel_lock:
            self._cancel_flags.discard(job_id)


async def _notify(frontend: Frontend, event: JobEvent, previous: asyncio.Task[None] | None) -> None:
    """Send one event after the job's previous one (keeps a job's edits in order)."""
    if previous is not None:
        await asyncio.wait([previous])
    try:
        await asyncio.wait_for(frontend.notify(event), timeout=60)
    except Exception:
        log.warning("could not show %s of job %d on %s", event.kind.value, event.job.id,
                    frontend.platform, exc_info=True)


def vars_of(key: AccountKey) -> tuple[str, str, str]:
    return (key.platform, key.community, key.user)


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 200:
        raise InvalidRequest("limit", "must be a whole number between 1 and 200")
    return limit
