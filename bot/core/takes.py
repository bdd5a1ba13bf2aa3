"""Groups of jobs asked for together: several takes of one prompt, or a batch of prompts.

A group is a list of ordinary jobs that share a ``group_id`` (the id of its first job). What
makes them a group, and nothing more:

- **charged together**: every job is inserted and charged (one ledger line each, so a failed
  take is refunded alone) in ONE write transaction — all of them or none;
- **claimed together**: the fair order gives a group one turn (:func:`bot.core.jobs.fair_queue`),
  so a claim with enough free slots takes the whole group into one GPU batch;
- **delivered together**: the delivery stage waits until no job of the group is queued or
  running, then hands the rendered ones (and names the failed ones) to the frontend at once;
- **cancelled together**: Cancel on any of them stops every unfinished job of the group, each
  refunded once by the usual conditional update.

Takes of one prompt get seeds ``seed, seed+1, …`` when the member gave a seed (so a take can
be re-made alone), and independent random seeds otherwise.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import replace

import aiosqlite

from bot.config import Config
from bot.core import jobs, ledger
from bot.core import limits as table
from bot.core.bank import Bank
from bot.core.errors import InvalidRequest
from bot.core.models import Destination, GenerationParams, Job, JobState, LedgerKind
from bot.core.requests import number

SEED_SPACE = 2**32
"""Seeds wrap around inside the seed option's range (0 … 2³²-1)."""

_SEPARATORS = re.compile(r"\s+\|\s+|\r?\n")
"""Between prompts of a batch: a line break, or `` | `` with spaces around the bar (a bar
inside a word, ``drum|bass``, stays part of the prompt)."""


def validate_takes(config: Config, value: object) -> int:
    """The number of takes asked for (``generation.default_takes`` when left out).

    Raises:
        InvalidRequest: not a whole number from 1 to :data:`bot.core.limits.TAKES` ``high``.
    """
    if value is None or value == "":
        return config.generation.default_takes
    limit = table.TAKES
    return int(number("takes", value, limit.low, limit.high, integer=True))


def take_params(params: GenerationParams, takes: int) -> list[GenerationParams]:
    """One parameter set per take: consecutive seeds after a given one, else fresh seeds."""
    if params.seed_given:
        return [replace(params, seed=(params.seed + n) % SEED_SPACE) for n in range(takes)]
    return [params] + [replace(params, seed=secrets.randbelow(2**31))
                       for _ in range(takes - 1)]


def split_prompts(config: Config, text: object) -> list[str]:
    """The prompts of a batch command: one per line, or separated by `` | ``.

    Raises:
        InvalidRequest: no prompt at all, or more than ``limits.max_batch_prompts``.
    """
    if not isinstance(text, str):
        raise InvalidRequest("prompts", "give one prompt per line")
    prompts = [p.strip() for p in _SEPARATORS.split(text) if p.strip()]
    most = table.batch_prompts(config)
    if not prompts:
        raise InvalidRequest("prompts", "give one prompt per line (they are all empty)")
    if len(prompts) > most:
        raise InvalidRequest("prompts", f"at most {most} prompts per batch (this has "
                             f"{len(prompts)}); nothing was charged")
    return prompts


def member_keys(key: str, count: int) -> list[str]:
    """Idempotency keys of a group's jobs: the request's own key, then ``key#2`` …"""
    return [key] + [f"{key}#{n}" for n in range(2, count + 1)]


async def insert_group(
    conn: aiosqlite.Connection, account: ledger.Account,
    members: list[tuple[GenerationParams, int, str]], *, destination: Destination,
    max_attempts: int, actor: str, now: float,
) -> tuple[list[int], int]:
    """Inside the caller's write transaction: insert and charge every (params, price,
    idempotency key) of a group, linked by the first job's id. Returns (job ids, balance).

    Raises:
        InsufficientTokens: the balance does not cover one of the charges (the caller's
            transaction rolls every insert and charge back).
    """
    ids: list[int] = []
    for params, price, key in members:
        ids.append(await jobs.insert(
            conn, account_id=account.id, params=params, price=price, idempotency_key=key,
            destination=destination, max_attempts=max_attempts, now=now,
            group_id=ids[0] if ids else None))
    await conn.execute_fetchall("UPDATE jobs SET group_id = ? WHERE id = ?", (ids[0], ids[0]))
    balance = account.balance
    for job_id, (_, price, _) in zip(ids, members, strict=True):
        balance = await ledger.debit(conn, account, price, LedgerKind.CHARGE, job_id=job_id,
                                     actor=actor, reason="music", now=now)
    return ids, balance


async def siblings(conn: aiosqlite.Connection, group_id: int) -> list[Job]:
    """Every job of a group, in the order they were asked for."""
    return await jobs.select(conn, "WHERE j.group_id = ? ORDER BY j.id", (group_id,))


async def cancel_group(
    conn: aiosqlite.Connection, group_id: int, *, by: str, now: float
) -> tuple[list[Job], list[int]]:
    """Inside a write transaction: cancel and refund the group's queued jobs now, flag its
    running ones. Returns (jobs cancelled now, ids of running jobs asked to stop)."""
    cancelled: list[Job] = []
    stopping: list[int] = []
    for job in await siblings(conn, group_id):
        if job.state is JobState.QUEUED:
            done = await Bank.end_refunded(conn, job.id, JobState.CANCELLED, now=now,
                                           error=f"cancelled by {by}",
                                           from_states=(JobState.QUEUED,))
            if done is not None:
                cancelled.append(done)
                continue
        if job.state in (JobState.QUEUED, JobState.RUNNING) and await jobs.request_cancel(
                conn, job.id):
            stopping.append(job.id)
    return cancelled, stopping


async def settle_delivery(
    conn: aiosqlite.Connection, head: Job, *, delivered: bool, error: str | None, now: float
) -> list[Job]:
    """Inside a write transaction: the rendered jobs of ``head``'s group become ``done``
    (delivered, or given up with ``error``). Returns the jobs that moved."""
    assert head.group_id is not None
    moved = []
    for job in await siblings(conn, head.group_id):
        if job.state is not JobState.RENDERED:
            continue
        if delivered:
            done = await jobs.mark_delivered(conn, job.id, now)
        else:
            done = await jobs.give_up_delivery(conn, job.id, error=error or "", now=now)
        if done is not None:
            moved.append(done)
    return moved


def failed_takes(group: Sequence[Job]) -> list[Job]:
    """The jobs of a finished group that produced no track (failed or cancelled, refunded)."""
    return [job for job in group if job.state in (JobState.FAILED, JobState.CANCELLED)]
