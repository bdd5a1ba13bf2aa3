"""What members and admins do: the one door frontends use into tokens and jobs.

Invariants kept here and in the modules it composes (tests in tests/core prove them):
- a charge and its job row are written in ONE transaction, keyed by an idempotency key;
- every charged job ends ``done`` (a track was made) or ``failed``/``cancelled`` with exactly
  one refund — terminal transitions are conditional updates, the ledger has unique indexes;
- admins act only inside their own community (shared wallets: operators only, see
  :mod:`bot.core.bank`); members only on their own jobs.

The worker side lives in :mod:`bot.core.settlement`, delivery in :mod:`bot.core.delivery`,
crash recovery in :mod:`bot.core.recovery`; :class:`MusicService` builds them for one process.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import aiosqlite

from bot.config import Config
from bot.core import jobs, ledger
from bot.core.apikeys import ApiKeys
from bot.core.bank import Bank, page_size
from bot.core.clock import SharedClock
from bot.core.db import Database, fetch_one
from bot.core.delivery import Delivery
from bot.core.errors import (
    InsufficientTokens,
    InvalidRequest,
    JobNotCancellable,
    JobNotFound,
    LimitReached,
    NotAuthorized,
    NothingToCancel,
    ServiceUnavailable,
    format_wait,
)
from bot.core.eta import SpeedEstimator
from bot.core.events import Notifier
from bot.core.leases import LeaseKeeper, new_owner_id
from bot.core.models import (
    AccountKey,
    Actor,
    Destination,
    EventKind,
    GenerationParams,
    Job,
    JobEvent,
    JobKind,
    JobState,
    LedgerEntry,
    LedgerKind,
    MusicRequest,
    QueueInfo,
    Receipt,
    Track,
)
from bot.core.places import QueuePlaces
from bot.core.ports import Frontend
from bot.core.recovery import Recovery
from bot.core.requests import (
    price,
    validate_duration,
    validate_format,
    validate_job_id,
    validate_model,
    validate_request,
)
from bot.core.settlement import Settlement
from bot.core.sharing import Sharing
from bot.core.stems import quote, request_stems
from bot.core.storage import StorageError, TrackStore, open_store
from bot.core.takes import (
    cancel_group,
    insert_group,
    member_keys,
    siblings,
    split_prompts,
    take_params,
    validate_takes,
)

log = logging.getLogger(__name__)


class MusicService:
    """Member and admin use cases over one store; also builds this process's worker port
    (``settlement``), delivery stage, recovery and lease keeper (see docs/architecture.md)."""

    def __init__(
        self, config: Config, db: Database, *, clock: Callable[[], float] = time.time,
        owner: str | None = None,
    ) -> None:
        self.config = config
        self.db = db
        shared = SharedClock(clock)  # the database server's time, for every process alike
        clock = shared
        self._clock = shared
        self.clock = shared
        """This process's clock, corrected to the database server's (bot.core.clock)."""
        self.owner = owner or new_owner_id()
        self.notifier = Notifier()
        self.bank = Bank(config, db, clock=clock)
        self.speed = SpeedEstimator(config.generation.max_batch)
        self.tracks: TrackStore = open_store(config)
        """Where finished tracks live for every process (a folder or an S3 bucket)."""
        self.settlement = Settlement(config, db, self.notifier, self.speed, owner=self.owner,
                                     clock=clock, store=self.tracks)
        self.delivery = Delivery(config, db, self.notifier, owner=self.owner,
                                 ready=self.settlement.rendered_ready, clock=clock,
                                 store=self.tracks)
        self.recovery = Recovery(config, db, self.notifier,
                                 work_available=self.settlement.work_available, clock=clock)
        self.leases = LeaseKeeper(db, self.owner, lease_s=config.generation.lease_s,
                                  on_renewed=self.settlement.leases_renewed, clock=clock,
                                  held=self.settlement.held_jobs)
        self.places = QueuePlaces(db, self.speed)
        """New jobs' queue places for receipts (one queue walk for every waiting request)."""
        self.apikeys = ApiKeys(config, db, clock=clock)
        """The members' HTTP API keys (:mod:`bot.core.apikeys`)."""
        self.sharing = Sharing(config, db)
        """Track pages: share / unshare and the page's lookup (``bot.core.sharing``)."""
        self.available_models: frozenset[str] | None = None
        """Catalogue keys with a loaded engine (set by the app); None accepts the catalogue."""
        self.stems_unavailable: Callable[[], str | None] = lambda: None
        """Why this bot's stems lane cannot split tracks now (set by the app), else None."""
        # PostgreSQL: another process's queued, rendered or cancelled job wakes the worker and
        # the delivery stage at once (LISTEN/NOTIFY); the poll stays the floor. No-op on SQLite.
        db.add_wakeup(self.settlement.work_available)
        db.add_wakeup(self.settlement.rendered_ready)

    # ----------------------------------------------------------------- wiring

    def register_frontend(self, frontend: Frontend) -> None:
        """Route events and deliveries of jobs whose destination is ``frontend.platform``."""
        self.notifier.register(frontend)

    def account_key(self, platform: str, community: str, user: str) -> AccountKey:
        """The account a member's tokens live in (shared across communities if configured)."""
        return self.bank.account_key(platform, community, user)

    async def start(self) -> None:
        """Start-up: measure this machine's clock against the database server's (see
        bot.core.clock); warn when the balance scope changed since the last run."""
        await self._clock.sync(self.db)
        await self._check_balance_scope()

    async def drain_events(self) -> None:
        """Wait until every pending frontend notification has been handed over."""
        await self.notifier.drain()

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
        charges nothing. Raises InvalidRequest, InsufficientTokens, LimitReached or
        DatabaseBusy, with nothing charged.
        """
        params = validate_request(self.config, request)
        takes = validate_takes(self.config, request.takes)
        if takes == 1:
            return await self._enqueue(actor, params, destination, idempotency_key)
        return await self._enqueue_group(actor, take_params(params, takes), destination,
                                         idempotency_key)

    async def request_batch(
        self, actor: Actor, prompts: object, request: MusicRequest, destination: Destination,
        idempotency_key: str,
    ) -> Receipt:
        """Several prompts (one per line, or separated by `` | ``) with the options of
        ``request`` (its ``prompt`` is ignored), each its own job or ``takes`` jobs; all are
        charged in one transaction and delivered together (:mod:`bot.core.takes`).

        Every prompt is validated before anything is charged; a bad one is named by its
        number. Raises InvalidRequest, InsufficientTokens, LimitReached, DatabaseBusy.
        """
        texts = split_prompts(self.config, prompts)
        takes = validate_takes(self.config, request.takes)
        group: list[GenerationParams] = []
        for number, text in enumerate(texts, start=1):
            try:
                params = validate_request(self.config, replace(request, prompt=text))
            except InvalidRequest as err:
                field = f"prompt {number}" if err.field == "prompt" else err.field
                raise InvalidRequest(field, err.reason) from None
            group.extend(take_params(params, takes))
        if len(group) == 1:
            return await self._enqueue(actor, group[0], destination, idempotency_key)
        return await self._enqueue_group(actor, group, destination, idempotency_key)

    async def reroll(
        self, actor: Actor, job_id: object, destination: Destination, idempotency_key: str
    ) -> Receipt:
        """Queue the same request as ``job_id`` with a new random seed (charged again)."""
        original = await self._visible_job(actor, job_id)
        if original.kind != JobKind.MUSIC:
            raise InvalidRequest("job", f"#{original.id} is a stems job; re-roll the track itself")
        params = replace(original.params, seed=secrets.randbelow(2**31), seed_given=False)
        return await self._enqueue(actor, params, destination, idempotency_key)

    async def extend(
        self, actor: Actor, job_id: object, seconds: object, destination: Destination,
        idempotency_key: str,
    ) -> Receipt:
        """Queue a continuation of a finished job's track by ``seconds`` (priced as new audio)."""
        original = await self._visible_job(actor, job_id)
        made = original.state in (JobState.RENDERED, JobState.DONE)
        if not made or not original.track_path or original.kind != JobKind.MUSIC:
            raise InvalidRequest("job", f"#{original.id} has no finished track to extend")
        added = validate_duration(self.config, seconds, original.params.model)
        params = replace(original.params, duration=added, continue_from=original.id,
                         seed=secrets.randbelow(2**31), seed_given=False)
        return await self._enqueue(actor, params, destination, idempotency_key)

    async def stems(
        self, actor: Actor, job_id: object, destination: Destination, idempotency_key: str
    ) -> Receipt:
        """Charge and queue the four stems of a finished track (see :mod:`bot.core.stems`).

        A second request for the same track while its stems are queued or made returns that
        job (``duplicate=True``) and charges nothing. Raises InvalidRequest, JobNotFound,
        InsufficientTokens or LimitReached, with nothing charged.
        """
        return await request_stems(self, actor, job_id, destination, idempotency_key)

    async def stems_price(self, actor: Actor, job_id: object) -> int:
        """What the stems of ``job_id`` would cost (the Stems button and /stems show it)."""
        return await quote(self, actor, job_id)

    async def cancel(self, actor: Actor, job_id: object = None) -> Job:
        """Cancel a queued job (refunded now) or ask the worker to stop a running one.

        ``job_id`` None picks the actor's newest queued or running job. A running job stops
        within a second wherever it runs (another process sees the flag at its heartbeat).
        """
        job = await self._cancellable_job(actor, job_id)
        if job.group_id is not None:
            return await self._cancel_group(actor, job)
        now = self._clock()
        async with self.db.write() as conn:
            done = await Bank.end_refunded(conn, job.id, JobState.CANCELLED, now=now,
                                           error=f"cancelled by {actor.user}",
                                           from_states=(JobState.QUEUED,))
            if done is None and not await jobs.request_cancel(conn, job.id):
                current = await jobs.get(conn, job.id)
                assert current is not None
                raise JobNotCancellable(job.id, _state_words(current.state))
            current = done or await jobs.get(conn, job.id)
        assert current is not None
        if done is not None:
            self.notifier.emit(JobEvent(EventKind.CANCELLED, done, refunded=done.refunded))
        else:
            self.settlement.request_stop(job.id)
        return current

    async def balance(self, actor: Actor, member: object = None) -> int:
        """Balance of the actor, or of ``member`` (admins only). Reading creates nothing."""
        return await self.bank.balance(actor, member)

    async def history(self, actor: Actor, limit: int = 10) -> list[Job]:
        """The actor's most recent jobs, newest first."""
        key = self.account_key(actor.platform, actor.community, actor.user)
        return await self._read_jobs(
            "WHERE a.platform = ? AND a.community = ? AND a.user = ? ORDER BY j.id DESC LIMIT ?",
            (key.platform, key.community, key.user, page_size(limit)),
        )

    async def queue(self, actor: Actor) -> QueueInfo:
        """The actor's queued/running jobs with their places, and the queue totals."""
        key = self.account_key(actor.platform, actor.community, actor.user)
        async with self.db.reader_snapshot() as conn:  # one consistent view of positions
            mine = await jobs.select(
                conn, "WHERE a.platform = ? AND a.community = ? AND a.user = ? "
                "AND j.state IN ('queued', 'running') ORDER BY j.id", list(_vars(key)))
            places = [(job, await jobs.position(conn, job.id)) for job in mine]
            queued = await jobs.count(conn, "state = 'queued'", ())
            running = await jobs.count(conn, "state = 'running'", ())
            waiting, busy = await jobs.backlog(conn)
        return QueueInfo(places, queued, running, self.speed.eta(waiting, busy))

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
        made = job.state in (JobState.RENDERED, JobState.DONE)
        stored = await self.tracks.local_file(job.track_path) if made and job.track_path else None
        path = stored if stored is not None else None
        if not made or path is None or not path.is_file():
            why = ("is not finished" if not made else
                   f"is no longer stored (tracks are kept {self.config.audio.retention_days:g} "
                   "days)")
            raise InvalidRequest("job", f"#{job.id} {why}")
        if job.track is not None:
            here = await self.tracks.local(job.track)  # this process's copy (shared store)
            return job, here if here is not None else job.track
        picture = path.with_suffix(".png")  # rows from before tracks were stored whole
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
            if job.group_id == job_id:  # one status message for the whole group
                for other in await siblings(conn, job_id):
                    if other.id != job_id:
                        await jobs.set_destination(conn, other.id, replace(
                            other.destination, status_ref=status_ref))

    # ----------------------------------------------------------------- admins

    async def grant(self, admin: Actor, member: object, amount: object, reason: str = "") -> int:
        """Add tokens to a member. Returns the new balance."""
        return await self.bank.adjust(admin, "grant", member, amount, reason)

    async def take(self, admin: Actor, member: object, amount: object, reason: str = "") -> int:
        """Remove tokens from a member; refuses to go below zero. Returns the new balance."""
        return await self.bank.adjust(admin, "take", member, amount, reason)

    async def set_balance(
        self, admin: Actor, member: object, amount: object, reason: str = ""
    ) -> int:
        """Set a member's balance to ``amount`` (the difference is written to the ledger)."""
        return await self.bank.adjust(admin, "set", member, amount, reason)

    async def adjust_balance(
        self, admin: Actor, action: str, member: object, amount: object, reason: str = ""
    ) -> int:
        """``grant``, ``take`` or ``set`` by name (what every admin command dispatches on)."""
        return await self.bank.adjust(admin, action, member, amount, reason)

    async def ledger(
        self, admin: Actor, member: object = None, limit: int = 20
    ) -> list[LedgerEntry]:
        """Newest ledger entries of a member, or of the whole community (admins only)."""
        return await self.bank.entries(admin, member, limit)

    # ----------------------------------------------------------------- internals

    async def _enqueue(
        self, actor: Actor, params: GenerationParams, destination: Destination, key: str
    ) -> Receipt:
        if not isinstance(key, str) or not 0 < len(key) <= 200:
            raise InvalidRequest("request id", "is missing or too long")
        self._loaded(params.model)
        await self._store_clips([params])
        cost = price(self.config, params.duration, params.model, params.format)
        account_key = self.account_key(actor.platform, actor.community, actor.user)
        now = self._clock()
        async with self.db.write() as conn:
            account = await ledger.ensure_account(conn, account_key, self.config.economy, now)
            # The insert is also the retry check (unique key): one statement fewer per order.
            job_id = await jobs.insert_new(
                conn, account_id=account.id, params=params, price=cost, idempotency_key=key,
                destination=destination, max_attempts=self.config.generation.max_attempts,
                now=now)
            if job_id is None:
                return await self._duplicate(conn, key, account_key)
            await self._check_limits(conn, account.id, now, new_job=job_id)
            balance = await ledger.debit(conn, account, cost, LedgerKind.CHARGE, job_id=job_id,
                                         actor=actor.user, reason="music", now=now)
        job = Job(id=job_id, account=account_key, params=params, state=JobState.QUEUED,
                  price=cost, idempotency_key=key, destination=destination, attempts=0,
                  max_attempts=self.config.generation.max_attempts, error=None,
                  cancel_requested=False, created_at=now, started_at=None, finished_at=None,
                  track_path=None)
        self._queued(job)
        place, eta = await self.places.place(job_id)  # after the commit: see places
        return Receipt(job, cost, balance, place, eta)

    async def _store_clips(self, group: list[GenerationParams]) -> None:
        """Put the members' clips (audio prompts, melodies) where a worker on another machine
        finds them (the track store), before anything is charged."""
        clips = {path for p in group for path in (p.audio_prompt, p.melody_prompt) if path}
        for path in sorted(clips):
            try:
                await self.tracks.save_file(path)
            except StorageError as err:
                log.error("clip not stored: %s", err)
                raise ServiceUnavailable("Your audio clip could not be stored right now; "
                                         "nothing was charged. Try again in a minute.") from err

    def _queued(self, *queued: Job) -> None:
        """Log and count new jobs, then wake the worker — in that order and before any await:
        a worker woken first (or another process's, by NOTIFY) could log "started" before
        "queued". The frontend shows the receipt, with the queue place, itself."""
        for job in queued:
            self.notifier.record(JobEvent(EventKind.QUEUED, job))
        self.settlement.work_available.set()

    async def _enqueue_group(
        self, actor: Actor, group: list[GenerationParams], destination: Destination, key: str,
    ) -> Receipt:
        """Charge and queue several jobs in ONE transaction (all or none), linked by the
        first job's id; each job has its own charge, so a failed one is refunded alone."""
        if not isinstance(key, str) or not 0 < len(key) <= 190:
            raise InvalidRequest("request id", "is missing or too long")
        for params in group:
            self._loaded(params.model)
        await self._store_clips(group)
        costs = [price(self.config, p.duration, p.model, p.format) for p in group]
        account_key = self.account_key(actor.platform, actor.community, actor.user)
        now = self._clock()
        attempts = self.config.generation.max_attempts
        async with self.db.write() as conn:
            if await jobs.by_key(conn, key) is not None:
                return await self._duplicate(conn, key, account_key)
            account = await ledger.ensure_account(conn, account_key, self.config.economy, now)
            await self._check_limits(conn, account.id, now, adding=len(group))
            if account.balance < sum(costs):  # the whole group's price, before any write
                raise InsufficientTokens(balance=account.balance, price=sum(costs))
            ids, balance = await insert_group(
                conn, account, list(zip(group, costs, member_keys(key, len(group)),
                                        strict=True)),
                destination=destination, max_attempts=attempts, actor=actor.user, now=now)
        made = tuple(
            Job(id=job_id, account=account_key, params=params, state=JobState.QUEUED,
                price=cost, idempotency_key=job_key, destination=destination, attempts=0,
                max_attempts=attempts, error=None, cancel_requested=False, created_at=now,
                started_at=None, finished_at=None, track_path=None, group_id=ids[0])
            for job_id, params, cost, job_key in zip(ids, group, costs,
                                                     member_keys(key, len(group)), strict=True))
        self._queued(*made)
        (place, _), (_, eta) = await asyncio.gather(
            self.places.place(ids[0]), self.places.place(ids[-1]))  # one queue walk
        return Receipt(made[0], sum(costs), balance, place, eta,
                       group=made)

    async def _cancel_group(self, actor: Actor, job: Job) -> Job:
        """Cancel every unfinished job of ``job``'s group; returns the group's first job with
        ``refunded`` = the tokens given back now (running takes are refunded as they stop)."""
        assert job.group_id is not None
        async with self.db.write() as conn:
            cancelled, stopping = await cancel_group(conn, job.group_id, by=actor.user,
                                                     now=self._clock())
            head = await jobs.get(conn, job.group_id)
        if not cancelled and not stopping:
            raise JobNotCancellable(job.id, _state_words(job.state))
        for done in cancelled:
            self.notifier.emit(JobEvent(EventKind.CANCELLED, done, refunded=done.refunded))
        for job_id in stopping:
            self.settlement.request_stop(job_id)
        assert head is not None
        return replace(head, refunded=sum(done.refunded for done in cancelled))

    def _loaded(self, model: str) -> str:
        if self.available_models is not None and model not in self.available_models:
            names = ", ".join(sorted(self.available_models))
            raise InvalidRequest("model", f"'{model}' is not loaded on this bot (available: "
                                 f"{names})")
        return model

    async def _duplicate(
        self, conn: aiosqlite.Connection, key: str, account_key: AccountKey
    ) -> Receipt:
        """The receipt of the request that first used ``key`` (a retry: nothing is charged).

        Raising rolls back whatever the caller's transaction wrote before it found out.
        """
        existing = await jobs.by_key(conn, key)
        assert existing is not None
        if existing.account != account_key:
            raise InvalidRequest("request id", "was already used by someone else")
        return await self._duplicate_receipt(conn, existing)

    async def _duplicate_receipt(self, conn: aiosqlite.Connection, job: Job) -> Receipt:
        """The first request's receipt again: its job, or every job of its group (a retry
        of a takes or batch request gets the same ids back)."""
        self.settlement.work_available.set()  # a retried request must not find the worker asleep
        account = await ledger.find_account(conn, job.account)
        place = await jobs.position(conn, job.id)
        group = tuple(await siblings(conn, job.group_id)) if job.group_id is not None else ()
        return Receipt(job, sum(j.price for j in group) or job.price,
                       account.balance if account else 0, place, None, duplicate=True,
                       group=group)

    async def _check_limits(self, conn: aiosqlite.Connection, account_id: int, now: float,
                            adding: int = 1, new_job: int = 0) -> None:
        """Refuse when the member or the queue is full; ``adding`` jobs of one request (a
        group counts once toward the member's limits, each job toward the queue's).
        ``new_job``: the request's job when it is already inserted (not counted)."""
        limits = self.config.limits
        window = limits.rate_limit
        # One query for every limit: this runs under the writer lock on each /music.
        row = await fetch_one(
            conn,
            "SELECT (SELECT COUNT(DISTINCT COALESCE(group_id, id)) FROM jobs "
            "WHERE account_id = :a AND state IN ('queued', 'running') AND id <> :new), "
            "(SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND id <> :new), "
            "(SELECT COUNT(DISTINCT COALESCE(group_id, id)) FROM jobs WHERE account_id = :a "
            "AND created_at > :since AND id <> :new), "
            "(SELECT MIN(created_at) FROM jobs WHERE account_id = :a AND created_at > :since "
            "AND id <> :new)",
            {"a": account_id, "since": now - window.window_s, "new": new_job},
        )
        assert row is not None
        mine, queued, recent, oldest = row
        if mine >= limits.max_queued_per_user:
            raise LimitReached("max_queued_per_user", f"You already have {mine} jobs waiting "
                               f"(limit {limits.max_queued_per_user}). Wait for one to finish "
                               "or cancel one.")
        if queued + adding > limits.max_queue:
            waiting, busy = await jobs.backlog(conn)
            raise LimitReached("max_queue", "The queue is full right now.",
                               retry_after_s=self.speed.eta(waiting[:1], busy))
        if recent >= window.count:
            retry = oldest + window.window_s - now
            raise LimitReached("rate_limit", f"You can request {window.count} tracks every "
                               f"{format_wait(window.window_s)}.", retry_after_s=retry)

    async def _visible_job(self, actor: Actor, job_id: object) -> Job:
        """A job the actor may act on: in the actor's community (their own or any, for re-roll)."""
        job = await self.get_job(job_id)
        own = job.account == self.account_key(actor.platform, actor.community, actor.user)
        if not own and (job.destination.platform, job.destination.community) != (
                actor.platform, actor.community):
            # own: a member reaches their own jobs whatever made them (the HTTP API's too)
            raise JobNotFound(job.id)
        return job

    async def _cancellable_job(self, actor: Actor, job_id: object) -> Job:
        if job_id is None or job_id == "":
            key = self.account_key(actor.platform, actor.community, actor.user)
            live = await self._read_jobs(
                "WHERE a.platform = ? AND a.community = ? AND a.user = ? "
                "AND j.state IN ('queued', 'running') ORDER BY j.id DESC LIMIT 1",
                list(_vars(key)))
            if not live:
                raise NothingToCancel()
            return live[0]
        job = await self._visible_job(actor, job_id)
        if job.account.user != actor.user and not actor.is_admin:
            raise NotAuthorized("cancel someone else's job")
        if not job.state.refundable and job.group_id is None:  # a group: its other jobs may
            raise JobNotCancellable(job.id, _state_words(job.state))  # still be cancellable
        return job

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


def _state_words(state: JobState) -> str:
    """How a member reads a state that can't be cancelled any more."""
    return "made and being delivered" if state is JobState.RENDERED else state.value


def _vars(key: AccountKey) -> tuple[str, str, str]:
    return (key.platform, key.community, key.user)
