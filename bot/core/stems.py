"""Stems: a member asks for the four Demucs stems of a finished track (a job of kind ``stems``).

A stems job is charged and refunded exactly like a track (one transaction, idempotency key,
the same state machine and refund guard); only its lane on the worker differs: its batch key
is ``stems:<model>`` (``models.stems``), so no music slot ever runs it. Its ``params`` are a
copy of the source job's (what history and status messages describe), ``source_job_id``
names the track to split, and its :class:`~bot.core.models.Track` is the zip of the stems with
each stem's own file in ``Track.stems``.

One live or finished stems job per source track: asking again while one is queued, running
or made answers with that job instead of charging twice (a failed or cancelled one may be
asked again).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import aiosqlite

from bot.config import Config
from bot.core import jobs, ledger
from bot.core.errors import InvalidRequest
from bot.core.models import (
    STEMS_BATCH_PREFIX,
    Actor,
    Destination,
    Job,
    JobKind,
    JobState,
    LedgerKind,
    Receipt,
)

if TYPE_CHECKING:
    from bot.core.service import MusicService

STEM_NAMES = ("drums", "bass", "other", "vocals")
"""The four sources of ``htdemucs``, in the order the model returns them."""


def stems_price(config: Config, seconds: float) -> int:
    """Tokens to split a track of ``seconds``: ``max(minimum, ceil(seconds * per_second))``."""
    rule = config.pricing.stems
    return max(int(rule.minimum), math.ceil(round(seconds * rule.per_second, 6)))


def stems_batch_key(config: Config) -> str:
    """The worker lane of stems jobs (``stems:htdemucs``)."""
    return STEMS_BATCH_PREFIX + config.models.stems


def source_seconds(job: Job) -> float:
    """Length of a finished job's track (what stems are priced on)."""
    return job.track.duration_s if job.track is not None else job.params.duration


async def stems_source(service: MusicService, actor: Actor, job_id: object) -> Job:
    """The finished music job whose track the actor may split. Raises InvalidRequest or
    JobNotFound with a message for the member; nothing is charged."""
    if not service.config.models.stems:
        raise InvalidRequest("stems", "are turned off on this bot")
    if (why := service.stems_unavailable()) is not None:
        raise InvalidRequest("stems", f"are not available right now: {why}")
    job = await service._visible_job(actor, job_id)
    if job.kind != JobKind.MUSIC:
        raise InvalidRequest("job", f"#{job.id} is already a stems job; pick the track itself")
    made = job.state in (JobState.RENDERED, JobState.DONE)
    if not made or not job.track_path:
        raise InvalidRequest("job", f"#{job.id} has no finished track to split into stems")
    if not Path(job.track_path).is_file():
        raise InvalidRequest("job", f"#{job.id} is no longer stored (tracks are kept "
                             f"{service.config.audio.retention_days:g} days)")
    return job


async def quote(service: MusicService, actor: Actor, job_id: object) -> int:
    """What stems of ``job_id`` would cost the actor (shown before anything is charged)."""
    return stems_price(service.config, source_seconds(await stems_source(service, actor,
                                                                          job_id)))


async def request_stems(
    service: MusicService, actor: Actor, job_id: object, destination: Destination,
    idempotency_key: str,
) -> Receipt:
    """Charge and queue a stems job for a finished track, in one transaction.

    A repeated ``idempotency_key`` returns the first job; a second request for a source that
    already has a queued, running or made stems job returns that job with
    ``duplicate=True``. Neither charges anything.
    """
    if not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= 200:
        raise InvalidRequest("request id", "is missing or too long")
    source = await stems_source(service, actor, job_id)
    cost = stems_price(service.config, source_seconds(source))
    params = replace(source.params, duration=source_seconds(source))
    account_key = service.account_key(actor.platform, actor.community, actor.user)
    now = service._clock()
    async with service.db.write() as conn:
        existing = await jobs.by_key(conn, idempotency_key)
        if existing is not None and existing.account != account_key:
            raise InvalidRequest("request id", "was already used by someone else")
        if existing is not None:
            return await service._duplicate_receipt(conn, existing)
        live = await _live_stems_of(conn, source.id)
        if live is not None:  # maybe another member's: the receipt carries the actor's balance
            mine = await ledger.find_account(conn, account_key)
            return Receipt(live, live.price, mine.balance if mine else 0,
                           await jobs.position(conn, live.id), None, duplicate=True)
        account = await ledger.ensure_account(conn, account_key, service.config.economy, now)
        await service._check_limits(conn, account.id, now)
        new_id = await jobs.insert(
            conn, account_id=account.id, params=params, price=cost,
            idempotency_key=idempotency_key, destination=destination,
            max_attempts=service.config.generation.max_attempts, now=now,
            kind=JobKind.STEMS.value, source_job_id=source.id,
            batch_key=stems_batch_key(service.config))
        balance = await ledger.debit(conn, account, cost, LedgerKind.CHARGE, job_id=new_id,
                                     actor=actor.user, reason="stems", now=now)
        job = await jobs.get(conn, new_id)
        place = await jobs.position(conn, new_id)
    assert job is not None
    service.settlement.work_available.set()
    return Receipt(job, cost, balance, place, None)


async def _live_stems_of(conn: aiosqlite.Connection, source_id: int) -> Job | None:
    """The newest stems job of ``source_id`` that is not failed or cancelled, if any."""
    found = await jobs.select(
        conn,
        "WHERE j.source_job_id = ? AND j.kind = ? AND j.state IN "
        "('queued', 'running', 'rendered', 'done') ORDER BY j.id DESC LIMIT 1",
        (source_id, JobKind.STEMS.value))
    return found[0] if found else None
