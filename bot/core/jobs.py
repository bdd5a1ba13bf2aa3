"""The durable job queue: SQL for inserting, claiming and moving jobs between states.

Each state change is one conditional ``UPDATE ... WHERE state = ... RETURNING`` so that two
callers racing on the same job cannot both win: the loser gets ``None`` and does nothing.
This is what makes "refund exactly once" hold even when a failure is reported twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiosqlite

from bot.core.db import fetch_one as one
from bot.core.models import AccountKey, Destination, GenerationParams, Job, JobState

_SELECT = (
    "SELECT j.*, a.platform, a.community, a.user FROM jobs j "
    "JOIN accounts a ON a.id = j.account_id "
)

# Fair order: every member's oldest queued job first, then everyone's second, and so on, so
# one member's five jobs cannot starve the others. Turns are counted over *queued* jobs only,
# so once a member's first job starts their second is "first" again; ties between equal
# turns therefore go to the member served least recently (``served``: when their latest job
# started; never = 0), which makes the order a round robin instead of "oldest id wins".
FAIR_QUEUE = (
    "SELECT q.id, q.batch_key, q.account_id, "
    "ROW_NUMBER() OVER (PARTITION BY q.account_id ORDER BY q.id) AS turn, "
    "COALESCE(s.served, 0) AS served "
    "FROM jobs q LEFT JOIN (SELECT account_id, MAX(started_at) AS served FROM jobs "
    "WHERE account_id IN (SELECT account_id FROM jobs WHERE state = 'queued') "
    "GROUP BY account_id) s ON s.account_id = q.account_id "
    "WHERE q.state = 'queued'"
)
FAIR_ORDER = "turn, served, id"
"""Sort key over FAIR_QUEUE rows. FAIR_QUEUE carries no ``params``: dragging every queued
job's JSON through the window sorts made them several times slower on a deep queue."""
_DURATION = "json_extract(params, '$.duration')"


def job_from_row(row: aiosqlite.Row) -> Job:
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
    )


async def insert(
    conn: aiosqlite.Connection, *, account_id: int, params: GenerationParams, price: int,
    idempotency_key: str, destination: Destination, max_attempts: int, now: float,
) -> int:
    row = await one(
        conn,
        "INSERT INTO jobs (account_id, params, batch_key, state, price, idempotency_key, "
        "destination, max_attempts, created_at) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?) "
        "RETURNING id",
        (account_id, params.to_json(), params.batch_key, price, idempotency_key,
         destination.to_json(), max_attempts, now),
    )
    assert row is not None
    return int(row[0])


async def get(conn: aiosqlite.Connection, job_id: int) -> Job | None:
    row = await one(conn, _SELECT + "WHERE j.id = ?", (job_id,))
    return job_from_row(row) if row else None


async def by_key(conn: aiosqlite.Connection, idempotency_key: str) -> Job | None:
    row = await one(conn, _SELECT + "WHERE j.idempotency_key = ?", (idempotency_key,))
    return job_from_row(row) if row else None


async def select(conn: aiosqlite.Connection, where: str, params: Sequence[object]) -> list[Job]:
    return [job_from_row(r) for r in await conn.execute_fetchall(_SELECT + where, params)]


async def claim(conn: aiosqlite.Connection, max_batch: int, now: float) -> list[Job]:
    """Move up to ``max_batch`` compatible queued jobs to running, fairest first."""
    head = await one(conn, f"SELECT batch_key FROM ({FAIR_QUEUE}) ORDER BY {FAIR_ORDER} LIMIT 1")
    if head is None:
        return []
    ids = [row[0] for row in await conn.execute_fetchall(
        f"SELECT id FROM ({FAIR_QUEUE}) WHERE batch_key = ? ORDER BY {FAIR_ORDER} LIMIT ?",
        (head[0], max_batch),
    )]
    marks = ",".join("?" * len(ids))
    await conn.execute_fetchall(
        f"UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?, "
        f"error = NULL WHERE state = 'queued' AND id IN ({marks})",
        (now, *ids),
    )
    return await select(conn, f"WHERE j.id IN ({marks}) ORDER BY j.id", ids)


async def finish(
    conn: aiosqlite.Connection, job_id: int, state: JobState, *, error: str | None, now: float,
    refund: bool, from_states: Sequence[JobState] = (JobState.QUEUED, JobState.RUNNING),
    track_path: str | None = None,
) -> Job | None:
    """Move a live job to a terminal state; None if it was not in ``from_states`` any more."""
    marks = ",".join("?" * len(from_states))
    changed = await one(
        conn,
        f"UPDATE jobs SET state = ?, error = ?, finished_at = ?, track_path = ?, "
        f"refunded = CASE WHEN ? THEN price ELSE 0 END "
        f"WHERE id = ? AND state IN ({marks}) RETURNING id",
        (state.value, error, now, track_path, refund, job_id, *(s.value for s in from_states)),
    )
    return await get(conn, job_id) if changed else None


async def set_track_path(conn: aiosqlite.Connection, job_id: int, path: str) -> None:
    """Record a running job's finished file before it is delivered (Extend can use it)."""
    await one(conn, "UPDATE jobs SET track_path = ? WHERE id = ? AND state = 'running' "
              "RETURNING id", (path, job_id))


async def requeue(
    conn: aiosqlite.Connection, job_id: int, *, error: str | None, count_attempt: bool
) -> Job | None:
    """Running → queued (retry, or release without spending an attempt)."""
    changed = await one(
        conn,
        "UPDATE jobs SET state = 'queued', error = ?, started_at = NULL, "
        "attempts = attempts - ? WHERE id = ? AND state = 'running' AND cancel_requested = 0 "
        "RETURNING id",
        (error, 0 if count_attempt else 1, job_id),
    )
    return await get(conn, job_id) if changed else None


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
        f"FROM ({FAIR_QUEUE})) WHERE id = ?",
        (job_id,),
    )
    return int(row[0]) if row else 0


_RUNNING_SECONDS = (
    f"COALESCE((SELECT SUM({_DURATION}) / 2 FROM jobs WHERE state = 'running'), 0)"
)
"""Audio seconds still to make for running jobs (counted as half done)."""


async def seconds_ahead(conn: aiosqlite.Connection) -> float:
    """Audio seconds of the whole queue plus what running jobs still have to make."""
    # Summed in SQL (json_extract) in one round trip: parsing every queued job's JSON in
    # Python on each request made /music O(queue) in Python time.
    row = await one(
        conn,
        f"SELECT COALESCE((SELECT SUM({_DURATION}) FROM jobs WHERE state = 'queued'), 0) "
        f"+ {_RUNNING_SECONDS}",
    )
    return float(row[0]) if row else 0.0


async def place(conn: aiosqlite.Connection, job_id: int) -> tuple[int, float]:
    """Position (1-based, 0 if not queued) and audio seconds ahead of a job, in one query."""
    row = await one(
        conn,
        f"WITH ordered AS (SELECT f.id, ROW_NUMBER() OVER (ORDER BY {FAIR_ORDER}) AS pos, "
        f"SUM({_DURATION}) OVER (ORDER BY {FAIR_ORDER} ROWS UNBOUNDED PRECEDING) AS ahead "
        f"FROM ({FAIR_QUEUE}) f JOIN jobs USING (id)) "
        f"SELECT (SELECT pos FROM ordered WHERE id = ?), "
        f"COALESCE((SELECT ahead FROM ordered WHERE id = ?), 0) + {_RUNNING_SECONDS}",
        (job_id, job_id),
    )
    assert row is not None
    return int(row[0] or 0), float(row[1])


async def count(conn: aiosqlite.Connection, where: str, params: Sequence[object]) -> int:
    row = await one(conn, f"SELECT COUNT(*) FROM jobs WHERE {where}", params)
    return int(row[0]) if row else 0

