"""The durable job queue: SQL for inserting, claiming, leasing and moving jobs between states.

Each state change is one conditional ``UPDATE ... WHERE state = ... RETURNING`` so that two
callers racing on the same job — two tasks, or two processes on one file — cannot both win:
the loser gets ``None`` and does nothing. This is what makes "refund exactly once" hold even
when a failure is reported twice. The allowed moves are :data:`bot.core.models.TRANSITIONS`.

Ownership: a process that claims a job (to render it, or to deliver it) writes its ``owner``
id and a ``lease_expires_at`` that it renews by heartbeat. Only a job whose lease expired (or
whose owner is known dead) may be taken over; see :mod:`bot.core.recovery`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

import aiosqlite

from bot.core.db import fetch_one as one
from bot.core.db import on_postgres
from bot.core.models import (
    AccountKey,
    Destination,
    GenerationParams,
    Job,
    JobKind,
    JobState,
    Track,
)

_SELECT = (
    "SELECT j.*, a.platform, a.community, a.user FROM jobs j "
    "JOIN accounts a ON a.id = j.account_id "
)

_FORGET_TOKENS = (
    "destination = json_set(destination, '$.interaction_token', json('null'), "
    "'$.token_expires_at', json('null'))"
)
"""SQL assignment that drops the platform's short-lived reply handle (a Discord interaction
token, a Slack response_url) once nothing will be sent through it any more."""


def fair_queue(platforms: Collection[str] | None = None) -> str:
    """Queued jobs with their fair-order keys (optionally only for some platforms).

    Fair order: every member's oldest queued request first, then everyone's second, and so on, so
    one member's five jobs cannot starve the others. Turns are counted over *queued* jobs
    only, so once a member's first job starts their second is "first" again; ties between
    equal turns go to the member served least recently (``served``: when their latest job
    started; never = 0), which makes the order a round robin instead of "oldest id wins".
    The rows carry no ``params``: dragging every queued job's JSON through the window sorts
    made them several times slower on a deep queue.
    """
    only = ""
    if platforms is not None:
        names = ", ".join(_quote(p) for p in sorted(platforms)) or "NULL"
        only = f" AND q.delivery_platform IN ({names})"  # where the job is delivered
    return (
        "SELECT q.id, q.batch_key, q.account_id, q.crashes, q.duration, "
        # DENSE_RANK over the group: the takes (or batch) of one request share one turn, so
        # they sit next to each other in the order and one claim takes them together.
        "DENSE_RANK() OVER (PARTITION BY q.account_id ORDER BY COALESCE(q.group_id, q.id)) "
        "AS turn, "
        # Per queued row, one descent of the jobs_served index (account_id, started_at): a
        # join over every job of the queued members grew with their whole history and was
        # most of the database's time per /music on PostgreSQL.
        "COALESCE((SELECT MAX(s.started_at) FROM jobs s WHERE s.account_id = q.account_id), 0)"
        " AS served "
        f"FROM jobs q WHERE q.state = 'queued'{only}"
    )


FAIR_QUEUE = fair_queue()
FAIR_ORDER = "turn, served, id"
"""Sort key over :func:`fair_queue` rows."""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# Alike by shape only to ledger.entry_from_row (duplicates): a keyword per column, other table.
def job_from_row(row: aiosqlite.Row) -> Job:
    track = row["track"]
    return Job(
        id=row["id"],
        account=AccountKey(row["platform"], row["community"], row["user"]),
        params=GenerationParams.from_json(row["params"]),
        state=JobState(row["state"]),
        price=row["price"],
        idempotency_key=row["idempotency_key"],
        destination=Destination.from_json(row["destination"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        error=row["error"],
        cancel_requested=bool(row["cancel_requested"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        track_path=row["track_path"],
        refunded=row["refunded"],
        owner=row["owner"],
        lease_expires_at=row["lease_expires_at"],
        crashes=row["crashes"],
        track=Track.from_json(track) if track else None,
        delivery_attempts=row["delivery_attempts"],
        delivered_at=row["delivered_at"],
        delivery_error=row["delivery_error"],
        share_id=row["share_id"],
        kind=row["kind"],
        source_job_id=row["source_job_id"],
        # Only jobs of other kinds keep their lane in the row; music's is its model.
        lane_key=None if row["kind"] == JobKind.MUSIC else row["batch_key"],
        group_id=row["group_id"],
        account_id=row["account_id"],
    )


async def insert(
    conn: aiosqlite.Connection, *, account_id: int, params: GenerationParams, price: int,
    idempotency_key: str, destination: Destination, max_attempts: int, now: float,
    kind: str = JobKind.MUSIC.value, source_job_id: int | None = None,
    batch_key: str | None = None, group_id: int | None = None,
) -> int:
    """Insert a queued job; a job of another ``kind`` names its lane's ``batch_key``."""
    job_id = await insert_new(
        conn, account_id=account_id, params=params, price=price,
        idempotency_key=idempotency_key, destination=destination, max_attempts=max_attempts,
        now=now, kind=kind, source_job_id=source_job_id, batch_key=batch_key, group_id=group_id)
    if job_id is None:
        raise AssertionError(f"idempotency key {idempotency_key!r} is taken")
    return job_id


async def insert_new(
    conn: aiosqlite.Connection, *, account_id: int, params: GenerationParams, price: int,
    idempotency_key: str, destination: Destination, max_attempts: int, now: float,
    kind: str = JobKind.MUSIC.value, source_job_id: int | None = None,
    batch_key: str | None = None, group_id: int | None = None,
) -> int | None:
    """:func:`insert`, or None (nothing written) when a job already has this idempotency
    key: the unique index answers "was this request made before?" in the same statement."""
    row = await one(
        conn,
        "INSERT INTO jobs (account_id, params, batch_key, duration, state, price, "
        "idempotency_key, destination, max_attempts, created_at, kind, source_job_id, "
        "group_id, delivery_platform) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
        (account_id, params.to_json(), batch_key or params.batch_key, params.duration, price,
         idempotency_key, destination.to_json(), max_attempts, now, str(kind), source_job_id,
         group_id, destination.platform),
    )
    return None if row is None else int(row[0])


async def get(conn: aiosqlite.Connection, job_id: int) -> Job | None:
    row = await one(conn, _SELECT + "WHERE j.id = ?", (job_id,))
    return job_from_row(row) if row else None


async def by_key(conn: aiosqlite.Connection, idempotency_key: str) -> Job | None:
    row = await one(conn, _SELECT + "WHERE j.idempotency_key = ?", (idempotency_key,))
    return job_from_row(row) if row else None


async def select(conn: aiosqlite.Connection, where: str, params: Sequence[object]) -> list[Job]:
    return [job_from_row(r) for r in await conn.execute_fetchall(_SELECT + where, params)]


async def _select_ids(conn: aiosqlite.Connection, ids: Sequence[int]) -> list[Job]:
    marks = ",".join("?" * len(ids))
    return await select(conn, f"WHERE j.id IN ({marks}) ORDER BY j.id", list(ids))


async def update_returning(
    conn: aiosqlite.Connection, update: str, params: Sequence[object]
) -> list[Job]:
    """Run ``update`` (an ``UPDATE jobs ... WHERE ...`` without RETURNING) and return the
    jobs it changed, by id. On PostgreSQL that is one round trip (a data-modifying CTE);
    SQLite cannot put an UPDATE in a CTE, but its statements cost no round trip."""
    if on_postgres(conn):
        rows = await conn.execute_fetchall(
            f"WITH j AS ({update} RETURNING *) SELECT j.*, a.platform, a.community, a.user "
            "FROM j JOIN accounts a ON a.id = j.account_id ORDER BY j.id", params)
        return [job_from_row(row) for row in rows]
    changed = await conn.execute_fetchall(f"{update} RETURNING id", params)
    return await _select_ids(conn, [row[0] for row in changed]) if changed else []


# --------------------------------------------------------------------------- rendering


async def claim(
    conn: aiosqlite.Connection, max_batch: int, now: float, *, owner: str, lease_s: float,
    platforms: Collection[str] | None = None, batch_key: str | None = None,
    alone: bool = True, exclude: Collection[str] = (),
) -> list[Job]:
    """Move up to ``max_batch`` compatible queued jobs to running under ``owner``'s lease.

    Fairest first; batch-mates share the head job's ``batch_key`` (its model), or the given
    one; ``exclude`` skips batch keys (the models a worker serves, when it looks for jobs of
    models it does not have). A job that was running when a process died (``crashes`` > 0)
    is claimed alone, and only when the caller runs nothing else of that batch (``alone``):
    if it is what kills the process it cannot take innocent batch-mates down with it again.
    """
    candidates = await _claim_candidates(conn, fair_queue(platforms), max_batch,
                                         batch_key=batch_key, exclude=exclude)
    if not candidates:
        return []
    head = candidates[0]
    if head["crashes"] > 0:
        if not alone:
            return []  # the suspect waits for the batch to drain, then runs by itself
        ids = [head["id"]]
    else:
        ids = [row["id"] for row in candidates if row["crashes"] == 0][:max_batch]
    marks = ",".join("?" * len(ids))
    mine = f"id IN ({marks})"
    if on_postgres(conn):
        # Other processes claim at the same moment (READ COMMITTED, no file lock): take the
        # rows no one else holds instead of queueing behind their transactions.
        # ARRAY(...): locked once, as an init plan; as "id IN (subquery)" the planner may
        # join it into the UPDATE's own scan, which then waits on the rows it should skip.
        mine = (f"id = ANY(ARRAY(SELECT id FROM jobs WHERE state = 'queued' AND {mine} "
                "ORDER BY id FOR UPDATE SKIP LOCKED))")
    # Only the jobs this UPDATE moved are ours (another process may have won some).
    return await update_returning(
        conn,
        "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?, "
        f"error = NULL, owner = ?, lease_expires_at = ? WHERE state = 'queued' AND {mine}",
        (now, owner, now + lease_s, *ids),
    )


async def _claim_candidates(
    conn: aiosqlite.Connection, queue: str, max_batch: int, *, batch_key: str | None,
    exclude: Collection[str],
) -> list[Any]:
    """The fairest queued job that passes the filters, then (same batch key, fair order) up
    to ``max_batch`` batch-mates that never crashed: one query, the head row first."""
    conditions = ["batch_key = ?"] if batch_key is not None else []
    conditions += ["batch_key NOT IN (" + ",".join("?" * len(exclude)) + ")"] if exclude else []
    only = " WHERE " + " AND ".join(conditions) if conditions else ""
    keys = (*(() if batch_key is None else (batch_key,)), *exclude)
    return list(await conn.execute_fetchall(
        f"WITH fq AS ({queue}), "
        f"head AS (SELECT id, batch_key FROM fq{only} ORDER BY {FAIR_ORDER} LIMIT 1) "
        "SELECT fq.id, fq.crashes FROM fq JOIN head ON fq.batch_key = head.batch_key "
        "WHERE fq.crashes = 0 OR fq.id = head.id "
        "ORDER BY CASE WHEN fq.id = head.id THEN 0 ELSE 1 END, fq.turn, fq.served, fq.id "
        "LIMIT ?", (*keys, max_batch + 1)))


async def renew_leases(
    conn: aiosqlite.Connection, owner: str, until: float, running: Collection[int] = (),
) -> list[tuple[int, bool]]:
    """Extend ``owner``'s leases on its deliveries and on the ``running`` jobs named;
    returns (job id, cancel requested) of those jobs."""
    ids = list(running)
    working = f" OR (state = 'running' AND id IN ({','.join('?' * len(ids))}))" if ids else ""
    rows = await conn.execute_fetchall(
        f"UPDATE jobs SET lease_expires_at = ? WHERE owner = ? AND (state = 'rendered'{working}) "
        "RETURNING id, cancel_requested", (until, owner, *ids))
    return [(int(r[0]), bool(r[1])) for r in rows]


async def set_progress(
    conn: aiosqlite.Connection, job_id: int, *, owner: str, progress: float, now: float
) -> None:
    """Record how far a running job is, for a frontend in another process to show."""
    await conn.execute_fetchall(
        "UPDATE jobs SET progress = ?, progress_at = ? "
        "WHERE id = ? AND state = 'running' AND owner = ?",
        (float(progress), float(now), job_id, owner))


async def mark_rendered(
    conn: aiosqlite.Connection, job_id: int, *, owner: str, track: Track, now: float
) -> Job | None:
    """running → rendered: the track is committed; the job enters the delivery outbox.

    Only the owner may do it, and not after a cancel was asked (that job is cancelled and
    refunded instead). None if the job is no longer this owner's running job.
    """
    changed = await one(
        conn,
        "UPDATE jobs SET state = 'rendered', track_path = ?, track = ?, rendered_at = ?, "
        "next_delivery_at = ?, owner = NULL, lease_expires_at = NULL "
        "WHERE id = ? AND state = 'running' AND owner = ? AND cancel_requested = 0 "
        "RETURNING id",
        (track.path, track.to_json(), now, now, job_id, owner),
    )
    return await get(conn, job_id) if changed else None


async def finish(
    conn: aiosqlite.Connection, job_id: int, state: JobState, *, error: str | None, now: float,
    from_states: Sequence[JobState] = (JobState.QUEUED, JobState.RUNNING),
    owner: str | None = None,
) -> Job | None:
    """Move a live job to ``failed`` or ``cancelled`` with a full refund marked on the row.

    Only queued or running jobs can end this way: a rendered track is never refunded. With
    ``owner``, a running job must still be held by that owner (a process whose lease lapsed
    must not settle a job someone else took over). None if nothing changed.
    """
    changed = await update_returning(conn, *finish_statement(
        job_id, state, error=error, now=now, from_states=from_states, owner=owner))
    return changed[0] if changed else None


def finish_statement(
    job_id: int, state: JobState, *, error: str | None, now: float,
    from_states: Sequence[JobState] = (JobState.QUEUED, JobState.RUNNING),
    owner: str | None = None,
) -> tuple[str, tuple[object, ...]]:
    """The ``UPDATE`` (without RETURNING) and parameters of :func:`finish`."""
    assert state in (JobState.FAILED, JobState.CANCELLED)
    assert all(s.refundable for s in from_states)
    marks = ",".join("?" * len(from_states))
    mine = "" if owner is None else " AND (state <> 'running' OR owner = ?)"
    return (
        f"UPDATE jobs SET state = ?, error = ?, finished_at = ?, refunded = price, "
        f"owner = NULL, lease_expires_at = NULL, {_FORGET_TOKENS} "
        f"WHERE id = ? AND state IN ({marks}){mine}",
        (state.value, error, now, job_id, *(s.value for s in from_states),
         *(() if owner is None else (owner,))),
    )


async def requeue(
    conn: aiosqlite.Connection, job_id: int, *, error: str | None, count_attempt: bool,
    owner: str | None = None, crashed: bool = False,
) -> Job | None:
    """Running → queued: a retry (``count_attempt``), a release, or a crash recovery.

    A release or a crash does not spend the job's attempt; a crash is counted in ``crashes``.
    With ``owner``, only that owner's job moves.
    """
    mine = "" if owner is None else " AND owner = ?"
    changed = await one(
        conn,
        "UPDATE jobs SET state = 'queued', error = ?, started_at = NULL, owner = NULL, "
        "lease_expires_at = NULL, attempts = attempts - ?, crashes = crashes + ? "
        f"WHERE id = ? AND state = 'running' AND cancel_requested = 0{mine} RETURNING id",
        (error, 0 if count_attempt else 1, 1 if crashed else 0, job_id,
         *(() if owner is None else (owner,))),
    )
    return await get(conn, job_id) if changed else None


async def orphaned(conn: aiosqlite.Connection, now: float) -> list[Job]:
    """Running jobs whose lease expired (or that no process ever leased)."""
    return await select(conn, "WHERE j.state = 'running' AND (j.owner IS NULL "
                        "OR j.lease_expires_at IS NULL OR j.lease_expires_at < ?)", (now,))


async def running_owners(conn: aiosqlite.Connection) -> list[str]:
    rows = await conn.execute_fetchall(
        "SELECT DISTINCT owner FROM jobs WHERE state IN ('running', 'rendered') "
        "AND owner IS NOT NULL")
    return [r[0] for r in rows]


async def expire_owner(conn: aiosqlite.Connection, owner: str) -> int:
    """End the leases of a process known to be dead, so its jobs can be taken over now."""
    rows = await conn.execute_fetchall(
        "UPDATE jobs SET lease_expires_at = 0 WHERE owner = ? RETURNING id", (owner,))
    return len(list(rows))  # typed as an Iterable, though aiosqlite returns a list


# --------------------------------------------------------------------------- delivery


async def claim_deliveries(
    conn: aiosqlite.Connection, *, platforms: Collection[str], owner: str, lease_s: float,
    now: float, limit: int,
) -> list[Job]:
    """Lease up to ``limit`` rendered jobs that are due for a delivery attempt."""
    if not platforms:
        return []
    names = ", ".join(_quote(p) for p in sorted(platforms))
    # PostgreSQL (READ COMMITTED, concurrent writers): two frontends' subqueries saw the same
    # free rows, the second UPDATE waited for the first's commit, then re-checked only
    # "id IN (...)" and took the rows again: every such track was posted twice. So lock the
    # picked rows (skipping those another process is claiming, as claim() does) and re-check
    # the lease on the row the UPDATE finally sees.
    pick, lock, recheck = "id IN (SELECT id", "", ""
    if on_postgres(conn):
        pick, lock = "id = ANY(ARRAY(SELECT id", " FOR UPDATE SKIP LOCKED)"
        recheck = "AND state = 'rendered' AND (lease_expires_at IS NULL OR lease_expires_at < ?) "
    rows = await conn.execute_fetchall(
        f"UPDATE jobs SET owner = ?, lease_expires_at = ? WHERE {pick} FROM jobs "
        "WHERE state = 'rendered' AND next_delivery_at <= ? "
        "AND (lease_expires_at IS NULL OR lease_expires_at < ?) "
        # A group goes out as one message: only once none of it is queued or running, and
        # only through its lowest rendered job (the delivery stage brings the others).
        "AND (group_id IS NULL OR (id = (SELECT MIN(g.id) FROM jobs g "
        "WHERE g.group_id = jobs.group_id AND g.state = 'rendered') "
        "AND NOT EXISTS (SELECT 1 FROM jobs g WHERE g.group_id = jobs.group_id "
        "AND g.state IN ('queued', 'running')))) "
        # The destination's platform, not the member's: a Discord member's API job is
        # delivered by the API frontend.
        f"AND delivery_platform IN ({names}) "
        f"ORDER BY next_delivery_at, id LIMIT ?{lock}) {recheck}RETURNING id",
        (owner, now + lease_s, now, now, limit, *((now,) if recheck else ())),
    )
    return await _select_ids(conn, [r[0] for r in rows]) if rows else []


async def mark_delivered(conn: aiosqlite.Connection, job_id: int, now: float) -> Job | None:
    """rendered → done: the platform accepted the track."""
    changed = await one(
        conn,
        "UPDATE jobs SET state = 'done', delivered_at = ?, finished_at = ?, error = NULL, "
        f"owner = NULL, lease_expires_at = NULL, {_FORGET_TOKENS} "
        "WHERE id = ? AND state = 'rendered' RETURNING id",
        (now, now, job_id),
    )
    return await get(conn, job_id) if changed else None


async def retry_delivery(
    conn: aiosqlite.Connection, job_id: int, *, owner: str, error: str, at: float
) -> Job | None:
    """Leave a rendered job in the outbox for another attempt at ``at`` (epoch seconds)."""
    changed = await one(
        conn,
        "UPDATE jobs SET delivery_attempts = delivery_attempts + 1, next_delivery_at = ?, "
        "delivery_error = ?, owner = NULL, lease_expires_at = NULL "
        "WHERE id = ? AND state = 'rendered' AND owner = ? RETURNING id",
        (at, error, job_id, owner),
    )
    return await get(conn, job_id) if changed else None


async def give_up_delivery(
    conn: aiosqlite.Connection, job_id: int, *, error: str, now: float
) -> Job | None:
    """rendered → done without delivery: the track stays available through /track."""
    changed = await one(
        conn,
        "UPDATE jobs SET state = 'done', delivery_attempts = delivery_attempts + 1, "
        f"delivery_error = ?, finished_at = ?, owner = NULL, lease_expires_at = NULL, "
        f"{_FORGET_TOKENS} WHERE id = ? AND state = 'rendered' RETURNING id",
        (error, now, job_id),
    )
    return await get(conn, job_id) if changed else None


async def release_all(conn: aiosqlite.Connection, owner: str) -> None:
    """Hand back the delivery leases of a process that stops politely."""
    await conn.execute_fetchall(
        "UPDATE jobs SET owner = NULL, lease_expires_at = NULL "
        "WHERE owner = ? AND state = 'rendered'", (owner,))


# --------------------------------------------------------------------------- members


async def request_cancel(conn: aiosqlite.Connection, job_id: int) -> bool:
    changed = await one(
        conn,
        "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state IN ('queued', 'running') "
        "RETURNING id",
        (job_id,),
    )
    return changed is not None


async def set_destination(
    conn: aiosqlite.Connection, job_id: int, destination: Destination
) -> None:
    await conn.execute_fetchall("UPDATE jobs SET destination = ? WHERE id = ?",
                                (destination.to_json(), job_id))


async def position(conn: aiosqlite.Connection, job_id: int) -> int:
    """1-based place of a queued job in the fair order (0 if it is not queued)."""
    row = await one(
        conn,
        f"SELECT pos FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY {FAIR_ORDER}) AS pos "
        f"FROM ({FAIR_QUEUE}) fq) ranked WHERE id = ?",
        (job_id,),
    )
    return int(row[0]) if row else 0


Backlog = tuple[list[float], list[float]]
"""(the lengths of the queued jobs in fair order, the lengths of the running jobs)."""


async def backlog(conn: aiosqlite.Connection) -> Backlog:
    """What the queue holds, for ETAs (see :data:`Backlog`)."""
    return queue_lengths(await queue_snapshot(conn))


QueueRows = list[tuple[int, int, float]]
"""(part: 0 queued in fair order, 1 running; job id; duration) rows of one query."""


QUEUE_SNAPSHOT = (
    f"SELECT 0 AS part, f.id, f.duration, f.turn, f.served FROM ({FAIR_QUEUE}) f "
    "UNION ALL SELECT 1, id, duration, 0, 0 FROM jobs WHERE state = 'running' "
    f"ORDER BY part, {FAIR_ORDER}")
"""The queue in fair order, then the running jobs: one query (one round trip on
PostgreSQL). It walks the whole queue: milliseconds at a depth of hundreds."""


async def queue_snapshot(conn: aiosqlite.Connection) -> QueueRows:
    """:data:`QUEUE_SNAPSHOT` read on ``conn``."""
    return queue_rows(await conn.execute_fetchall(QUEUE_SNAPSHOT))


def queue_rows(rows: Iterable[Any]) -> QueueRows:
    """:data:`QueueRows` from the rows of :data:`QUEUE_SNAPSHOT`."""
    return [(int(row[0]), int(row[1]), float(row[2])) for row in rows]


def queue_lengths(rows: QueueRows) -> Backlog:
    """The :data:`Backlog` in a :func:`queue_snapshot`."""
    return ([length for part, _, length in rows if part == 0],
            [length for part, _, length in rows if part == 1])


async def count(conn: aiosqlite.Connection, where: str, params: Sequence[object]) -> int:
    row = await one(conn, f"SELECT COUNT(*) FROM jobs WHERE {where}", params)
    return int(row[0]) if row else 0
