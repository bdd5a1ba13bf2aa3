"""The storage port: :class:`Database`, with a SQLite backend (default) and PostgreSQL.

``Database(target)`` opens :class:`SqliteDatabase` for a file path and
:class:`bot.core.pg.PostgresDatabase` for a ``postgresql://`` URL. Both expose the same call
surface, which every module of ``bot.core`` uses and nothing else:

- ``async with db.write() as conn: await conn.execute_fetchall(sql, params)`` (a write
  transaction; ``fetch_one(conn, sql, params)`` for the first row);
- ``db.fetchone`` / ``db.fetchall`` (committed data) and ``db.reader_snapshot()``;
- rows indexable by position and by column name.

SQL is written once, in the portable subset (see docs/postgres.md): ``?`` placeholders,
``INSERT ... ON CONFLICT``, ``RETURNING``; the PostgreSQL adapter rewrites ``?`` to ``$n``
and quotes the reserved word ``user`` (cached per statement text).

Migrations. ``MIGRATIONS`` below is the SQLite list. PostgreSQL starts from its own
baseline (:data:`bot.core.pg.PG_BASELINE`, recorded as version 3 = the schema after SQLite
migrations 1-3, which are SQLite-specific table rebuilds), then applies every later entry
of ``MIGRATIONS`` too: its SQL is translated by :func:`bot.core.pg.to_pg_ddl` (``INTEGER
PRIMARY KEY`` → identity ``BIGINT``, ``INTEGER`` → ``BIGINT``, ``REAL`` → ``DOUBLE
PRECISION``, ``user`` quoted), or, for anything that translation cannot express, the text in
``bot.core.pg.PG_OVERRIDES[version]`` is used instead. So a new migration 4-8 written in
the portable subset (``ALTER TABLE ... ADD COLUMN``, ``CREATE TABLE``, ``CREATE INDEX``)
needs no PostgreSQL work at all; one that needs more gets a ``PG_OVERRIDES`` entry.

SQLite: why two connections: all writes go through one connection guarded by an ``asyncio.Lock`` and
run inside ``BEGIN IMMEDIATE`` (so a read-modify-write never interleaves with another), while
queries use a separate autocommit connection (aiosqlite, in its own thread) that, thanks to
WAL, sees only committed data and never blocks the writer.

Why the writer runs on the event loop's thread (:class:`InlineWriter`): a statement of the
write path (an indexed lookup, a conditional UPDATE, an INSERT into a WAL file with
``synchronous = NORMAL``, hence no fsync) takes 1-20 microseconds, while handing it to a
connection thread and back costs ~80 microseconds, and far more when a rendering thread holds
the GIL: the ledger's throughput was the number of thread hops per charge. The writer never
waits inside SQLite either: its busy timeout is 0, so a lock held by another process is
retried with ``asyncio.sleep`` (the loop keeps serving) until ``busy_timeout_ms``, and the
WAL checkpoint (the one step that fsyncs) is taken off the loop by :class:`Checkpointer`.
Write statements must therefore stay index-bound. A read that walks many rows runs on the
loop too when it is bounded and shared (the queue walk, :mod:`bot.core.places`), else on the
reader.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosqlite

from bot.core.errors import MusicBotError

log = logging.getLogger(__name__)

T = TypeVar("T")


class Connection(Protocol):
    """What the core asks of a connection from ``write()`` or ``reader_snapshot()`` (SQLite's
    inline writer, aiosqlite's reader, PostgreSQL's :class:`bot.core.pg.PgConnection`)."""

    async def execute_fetchall(self, sql: str, params: Any = ...) -> Any: ...

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "accounts, append-only ledger, jobs",
        """
        CREATE TABLE accounts (
            id INTEGER PRIMARY KEY,
            platform TEXT NOT NULL,
            community TEXT NOT NULL,
            user TEXT NOT NULL,
            balance INTEGER NOT NULL CHECK (balance >= 0),
            allowance_day INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            UNIQUE (platform, community, user)
        );
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            params TEXT NOT NULL,
            batch_key TEXT NOT NULL,
            state TEXT NOT NULL
                CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
            price INTEGER NOT NULL CHECK (price >= 0),
            idempotency_key TEXT NOT NULL UNIQUE,
            destination TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            error TEXT,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            refunded INTEGER NOT NULL DEFAULT 0,
            track_path TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL
        );
        CREATE INDEX jobs_by_state ON jobs (state, id);
        CREATE INDEX jobs_by_account ON jobs (account_id, id);
        CREATE TABLE ledger (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            delta INTEGER NOT NULL,
            balance_after INTEGER NOT NULL CHECK (balance_after >= 0),
            kind TEXT NOT NULL CHECK (kind IN
                ('starting', 'allowance', 'grant', 'take', 'set', 'charge', 'refund')),
            job_id INTEGER REFERENCES jobs(id),
            actor TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL
        );
        CREATE INDEX ledger_by_account ON ledger (account_id, id);
        -- A job is charged at most once and refunded at most once, whatever the code does.
        CREATE UNIQUE INDEX ledger_one_charge_per_job ON ledger (job_id) WHERE kind = 'charge';
        CREATE UNIQUE INDEX ledger_one_refund_per_job ON ledger (job_id) WHERE kind = 'refund';
        CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
            BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
        CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
            BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
        CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        """,
    ),
    (
        2,
        "job leases, rendered state and delivery outbox",
        # SQLite cannot change a CHECK constraint in place: the jobs table is rebuilt (the
        # documented 12-step procedure; foreign keys are off for this migration only).
        """
        CREATE TABLE jobs_v2 (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            params TEXT NOT NULL,
            batch_key TEXT NOT NULL,
            duration REAL NOT NULL,
            state TEXT NOT NULL CHECK (state IN
                ('queued', 'running', 'rendered', 'done', 'failed', 'cancelled')),
            price INTEGER NOT NULL CHECK (price >= 0),
            idempotency_key TEXT NOT NULL UNIQUE,
            destination TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            crashes INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            refunded INTEGER NOT NULL DEFAULT 0,
            owner TEXT,
            lease_expires_at REAL,
            track_path TEXT,
            track TEXT,
            delivery_attempts INTEGER NOT NULL DEFAULT 0,
            next_delivery_at REAL,
            delivered_at REAL,
            delivery_error TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            rendered_at REAL,
            finished_at REAL,
            CHECK (state NOT IN ('rendered', 'done') OR refunded = 0)
        );
        INSERT INTO jobs_v2 (id, account_id, params, batch_key, duration, state, price,
            idempotency_key, destination, attempts, max_attempts, error, cancel_requested,
            refunded, track_path, created_at, started_at, finished_at, delivered_at)
            SELECT id, account_id, params, batch_key, json_extract(params, '$.duration'), state,
            price, idempotency_key, destination, attempts, max_attempts, error,
            cancel_requested, refunded, track_path, created_at, started_at, finished_at,
            CASE WHEN state = 'done' THEN finished_at END FROM jobs;
        DROP TABLE jobs;
        ALTER TABLE jobs_v2 RENAME TO jobs;
        CREATE INDEX jobs_by_state ON jobs (state, id);
        CREATE INDEX jobs_by_account ON jobs (account_id, id);
        CREATE INDEX jobs_served ON jobs (account_id, started_at);
        CREATE INDEX jobs_by_owner ON jobs (owner) WHERE owner IS NOT NULL;
        """,
    ),
    (
        3,
        "batch key is the model (continuous batching mixes lengths and settings)",
        """
        UPDATE jobs SET batch_key = json_extract(params, '$.model');
        """,
    ),
    (
        4,
        "API keys: a member's keys for the HTTP API (only the hash of the secret is kept)",
        """
        CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY,
            prefix TEXT NOT NULL UNIQUE,
            platform TEXT NOT NULL,
            community TEXT NOT NULL,
            user TEXT NOT NULL,
            is_admin INTEGER NOT NULL DEFAULT 0,
            hash TEXT NOT NULL,
            label TEXT NOT NULL DEFAULT '',
            webhook_secret TEXT NOT NULL,
            created_at REAL NOT NULL,
            last_used_at REAL,
            revoked_at REAL
        );
        CREATE INDEX api_keys_by_member ON api_keys (platform, community, user);
        """,
    ),
    (
        5,
        "share ids: a finished track's public page (/t/<share_id>)",
        # NULL = private. UNIQUE allows many NULLs on SQLite and PostgreSQL alike.
        """
        ALTER TABLE jobs ADD COLUMN share_id TEXT;
        CREATE UNIQUE INDEX jobs_by_share_id ON jobs (share_id);
        """,
    ),
    (
        6,
        "job kinds: stems jobs (Demucs) separate the track of a source job",
        """
        ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'music';
        ALTER TABLE jobs ADD COLUMN source_job_id INTEGER REFERENCES jobs(id);
        CREATE INDEX jobs_by_source ON jobs (source_job_id, kind)
            WHERE source_job_id IS NOT NULL;
        """,
    ),
    (
        8,
        "job groups: takes of one prompt and batches of prompts, delivered together",
        """
        ALTER TABLE jobs ADD COLUMN group_id INTEGER;
        CREATE INDEX jobs_by_group ON jobs (group_id) WHERE group_id IS NOT NULL;
        """,
    ),
    (
        9,
        "job progress on the row, for frontends in another process",
        """
        ALTER TABLE jobs ADD COLUMN progress REAL;
        ALTER TABLE jobs ADD COLUMN progress_at REAL;
        CREATE INDEX jobs_by_finish ON jobs (state, finished_at);
        """,
    ),
    (
        10,
        "a job's delivery platform on the row (an API job of a Discord member goes to the API)",
        # Before the HTTP API a job was always delivered on its member's own platform.
        """
        ALTER TABLE jobs ADD COLUMN delivery_platform TEXT;
        UPDATE jobs SET delivery_platform =
            (SELECT a.platform FROM accounts a WHERE a.id = jobs.account_id);
        CREATE INDEX jobs_by_delivery ON jobs (state, delivery_platform, next_delivery_at);
        """,
    ),
]
"""Numbered schema migrations. Append only: never edit a released entry."""

LATEST_VERSION = MIGRATIONS[-1][0]
REBUILDS = frozenset({2})
"""Migrations that rebuild a table others reference: run with foreign keys off, then
checked with ``PRAGMA foreign_key_check`` before they commit."""


BUSY_TIMEOUT_MS = 30_000
"""How long a write waits for another process's transaction before DatabaseBusy."""

BUSY_RETRY_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
"""Pauses between tries of ``BEGIN IMMEDIATE`` while another process writes (then 50 ms)."""

CHECKPOINT_WAL_BYTES = 4 * 1024 * 1024
"""WAL size at which a checkpoint is started off the loop (SQLite's own default: 1000 pages)."""


class DatabaseError(MusicBotError):
    """The database file cannot be opened or has a schema newer than this code."""

    code = "database"


class DatabaseBusy(MusicBotError):
    """Another process held the write lock for longer than ``busy_timeout``; nothing changed."""

    code = "busy"

    def __init__(self) -> None:
        super().__init__("The bot is busy right now and nothing was changed or charged. "
                         "Please try again in a moment.")


def on_postgres(conn: object) -> bool:
    """Whether a connection from ``write()``/``reader_snapshot()`` talks to PostgreSQL (for
    the few statements written per dialect: row locks, one-round-trip forms)."""
    return getattr(conn, "dialect", "sqlite") == "postgres"


def is_postgres_url(target: object) -> bool:
    """Whether a ``database`` setting names a PostgreSQL server rather than a SQLite file."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


class Database:
    """The storage port (accounts, ledger, jobs): ``Database(path_or_url)`` opens the backend
    the target names — :class:`SqliteDatabase` for a path, PostgreSQL for a URL."""

    dialect = "sqlite"
    """``sqlite`` or ``postgres``: for the rare SQL that differs (row locks on claims)."""

    def __new__(cls, target: str | Path, **options: Any) -> Database:
        if cls is Database:
            if is_postgres_url(target):
                from bot.core.pg import PostgresDatabase  # asyncpg only when it is used
                cls = PostgresDatabase
            else:
                cls = SqliteDatabase
        return super().__new__(cls)

    def __init__(self, target: str | Path, **options: Any) -> None:
        raise NotImplementedError  # pragma: no cover - subclasses initialise themselves

    async def open(self, *, migrate: bool = True) -> Database:
        """Connect and (by default) apply pending migrations."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    @property
    def is_open(self) -> bool:
        raise NotImplementedError

    async def __aenter__(self) -> Database:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def version(self) -> int:
        """Schema version (0 for a new database)."""
        raise NotImplementedError

    async def upgrade(self) -> list[int]:
        """Apply pending migrations in order; returns the versions applied."""
        raise NotImplementedError

    def write(self) -> AbstractAsyncContextManager[Any]:
        """A write transaction: commit on success, roll back on error."""
        raise NotImplementedError

    def reader_snapshot(self) -> AbstractAsyncContextManager[Any]:
        """A read-only transaction: every query inside sees one committed state."""
        raise NotImplementedError

    async def fetchone(self, sql: str, params: Any = ()) -> Any:
        """First row of a query on committed data (None if none)."""
        raise NotImplementedError

    async def fetchall(self, sql: str, params: Any = ()) -> list[Any]:
        """All rows of a query on committed data."""
        raise NotImplementedError

    async def server_time(self) -> float | None:
        """The database server's clock (unix seconds), where it is another machine's:
        PostgreSQL. None for SQLite (same machine, same clock)."""
        return None

    def add_wakeup(self, event: asyncio.Event) -> None:
        """Set ``event`` when another process changes the queue (PostgreSQL NOTIFY).

        SQLite has no such channel: its processes find each other's jobs by polling
        (``generation.poll_s``), so this does nothing there.
        """


class SqliteDatabase(Database):
    """The SQLite file behind accounts, ledger and jobs."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS,
                 **options: Any) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._writer: InlineWriter | None = None
        self._queries: sqlite3.Connection | None = None
        """Single-statement reads (``fetchone``/``fetchall``), on the loop thread like the
        writer: index-bound point reads (an API key, a job) take microseconds, and a hop to
        a reader thread per read made them wait for every busy task on the loop."""
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._checkpointer = Checkpointer(self.path)

    async def open(self, *, migrate: bool = True) -> SqliteDatabase:
        """Open both connections, enable WAL and (by default) apply pending migrations."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = InlineWriter.connect(self.path)
            await self._writer.set_wal(self.busy_timeout_ms)
            if migrate:
                await self.upgrade()
            self._reader = await _connect(self.path, self.busy_timeout_ms)
            self._queries = _connect_inline(self.path)
        except (OSError, sqlite3.Error) as exc:
            await self.close()
            raise DatabaseError(f"Cannot open the database {self.path}: {exc}") from exc
        except BaseException:
            # e.g. "schema newer than this musicbot": an unclosed connection's thread would
            # keep the process alive, so the bot would hang instead of exiting with the error.
            await self.close()
            raise
        return self

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    async def close(self) -> None:
        reader, writer, queries = self._reader, self._writer, self._queries
        self._reader = self._writer = self._queries = None
        if queries is not None:
            queries.close()
        if reader is not None:
            await reader.close()
        await self._checkpointer.close()
        if writer is not None:
            writer.close()

    async def version(self) -> int:
        """Schema version of the file (0 for a new file)."""
        conn = self._writer or self._reader
        assert conn is not None, "database is not open"
        row = await fetch_one(
            conn, "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'"
        )
        if row is None:
            return 0
        row = await fetch_one(conn, "SELECT MAX(version) FROM schema_version")
        return int(row[0] or 0) if row else 0

    async def upgrade(self) -> list[int]:
        """Apply pending migrations in order, each in its own transaction. Returns versions."""
        assert self._writer is not None, "database is not open"
        await self._writer.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        current = await self.version()
        if current > LATEST_VERSION:
            raise DatabaseError(
                f"The database {self.path} has schema version {current}, newer than this "
                f"musicbot ({LATEST_VERSION}). Upgrade musicbot."
            )
        applied = []
        for version, description, sql in MIGRATIONS:
            if version <= current:
                continue
            if version in REBUILDS:
                await _pragma(self._writer, "foreign_keys = OFF")  # no-op inside a transaction
            try:
                async with self.write() as conn:
                    for statement in _split_sql(sql):
                        await conn.execute(statement)
                    if await conn.execute_fetchall("PRAGMA foreign_key_check"):
                        raise DatabaseError(f"migration {version} broke a foreign key")
                    await conn.execute(
                        "INSERT INTO schema_version VALUES (?, ?, ?)",
                        (version, description, time.time()),
                    )
            finally:
                await _pragma(self._writer, "foreign_keys = ON")
            log.info("database migrated to version %d (%s)", version, description)
            applied.append(version)
        return applied

    @asynccontextmanager
    async def write(self) -> AsyncIterator[InlineWriter]:
        """A write transaction (``BEGIN IMMEDIATE``): commit on success, roll back on error.

        Only one runs at a time; never await network I/O inside it.
        """
        assert self._writer is not None, "database is not open"
        async with self._write_lock:
            conn = self._writer
            await conn.begin_immediate(self.busy_timeout_ms)
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        self._checkpointer.after_commit()

    @asynccontextmanager
    async def reader_snapshot(self) -> AsyncIterator[aiosqlite.Connection]:
        """The reader connection inside one read transaction: every query sees the same
        committed state. Never blocks the writer (WAL)."""
        assert self._reader is not None, "database is not open"
        async with self._read_lock:
            await _begin(self._reader, "BEGIN")
            try:
                yield self._reader
            finally:
                await asyncio.shield(self._reader.rollback())

    @property
    def reader(self) -> aiosqlite.Connection:
        """The autocommit connection for queries outside write transactions (committed data)."""
        assert self._reader is not None, "database is not open"
        return self._reader

    async def fetchone(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        """First row of one query on committed data (an index-bound statement: it runs on
        the loop thread; scans belong in :meth:`reader_snapshot`)."""
        queries = self._queries
        assert queries is not None, "database is not open"

        def first() -> sqlite3.Row | None:
            cursor = queries.execute(sql, params)
            try:
                return cursor.fetchone()  # type: ignore[no-any-return]
            finally:
                cursor.close()  # an open statement would pin this connection's snapshot

        return await retry_busy(first, self.busy_timeout_ms)

    async def fetchall(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        """All rows of one query on committed data (see :meth:`fetchone`)."""
        queries = self._queries
        assert queries is not None, "database is not open"
        return await retry_busy(lambda: queries.execute(sql, params).fetchall(),
                                self.busy_timeout_ms)


class StatementResult:
    """What ``execute`` returns on the write connections (SQLite inline, PostgreSQL): usable
    like an aiosqlite cursor — ``await`` it, or ``async with`` it and ``fetchone`` /
    ``fetchall``. The statement runs once, on first use."""

    def __init__(self, run: Any) -> None:
        self._query = run
        self._rows: list[Any] | None = None

    async def _run(self) -> StatementResult:
        if self._rows is None:
            self._rows = list(await self._query)
        return self

    def __await__(self) -> Generator[Any, None, StatementResult]:
        return self._run().__await__()

    async def __aenter__(self) -> StatementResult:
        return await self._run()

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def fetchone(self) -> Any:
        return next(iter(self._rows or ()), None)

    async def fetchall(self) -> list[Any]:
        return list(self._rows or ())


class InlineWriter:
    """The SQLite write connection, run on the event loop's thread (see the module docstring
    for why). Offers the part of aiosqlite's surface the core uses: ``execute_fetchall`` and
    ``execute``, both awaitable, so the same code runs on PostgreSQL's connections."""

    dialect = "sqlite"

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw

    @classmethod
    def connect(cls, path: Path) -> InlineWriter:
        return cls(_connect_inline(path))

    async def set_wal(self, busy_timeout_ms: int) -> None:
        """Switch the file to WAL (waits, like a write, while another process holds it)."""
        await retry_busy(lambda: self.raw.execute("PRAGMA journal_mode = WAL").fetchall(),
                         busy_timeout_ms)

    async def execute_fetchall(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        """Run one statement; all its rows."""
        try:
            return self.raw.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise DatabaseBusy() from exc
            raise

    def execute(self, sql: str, params: Any = ()) -> StatementResult:
        return StatementResult(self.execute_fetchall(sql, params))

    async def begin_immediate(self, busy_timeout_ms: int) -> None:
        """``BEGIN IMMEDIATE``; while another process writes, retry without blocking the
        loop; DatabaseBusy (nothing changed) after ``busy_timeout_ms``."""
        await retry_busy(lambda: self.raw.execute("BEGIN IMMEDIATE"), busy_timeout_ms)

    def commit(self) -> None:
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        # SQLite has already rolled back after some errors (disk full, I/O): nothing open.
        if self.raw.in_transaction:
            self.raw.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()


class Checkpointer:
    """Copies the WAL back into the database file off the loop, on its own connection.

    The writer's automatic checkpoint is off because a checkpoint fsyncs: inline it would
    stall the loop for milliseconds every few thousand commits. After a commit, when the WAL
    has grown past :data:`CHECKPOINT_WAL_BYTES`, a PASSIVE checkpoint (it never waits for
    readers or other processes) runs in a thread; at most one at a time.
    """

    def __init__(self, path: Path) -> None:
        self.wal = path.with_name(path.name + "-wal")
        self.path = path
        self._task: asyncio.Task[None] | None = None
        self._commits = 0

    def after_commit(self) -> None:
        self._commits += 1
        if self._commits % 64 or (self._task is not None and not self._task.done()):
            return  # the size check is a syscall: every 64 commits is enough
        try:
            if self.wal.stat().st_size < CHECKPOINT_WAL_BYTES:
                return
        except OSError:
            return
        self._task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._checkpoint))

    def _checkpoint(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # another process checkpoints: next time
            log.debug("WAL checkpoint skipped: %s", exc)
        finally:
            conn.close()

    async def close(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)
        self._task = None


async def retry_busy(attempt: Callable[[], T], busy_timeout_ms: int) -> T:
    """``attempt()`` (a statement on a loop-thread connection); while SQLite answers "busy"
    (another process holds the lock), try again after a pause on the loop, up to
    ``busy_timeout_ms``, then DatabaseBusy."""
    deadline = time.monotonic() + busy_timeout_ms / 1000
    tries = 0
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            pause = BUSY_RETRY_S[min(tries, len(BUSY_RETRY_S) - 1)]
            if time.monotonic() + pause > deadline:
                raise DatabaseBusy() from exc
            tries += 1
            await asyncio.sleep(pause)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


async def _begin(conn: aiosqlite.Connection, statement: str = "BEGIN IMMEDIATE") -> None:
    """``BEGIN IMMEDIATE`` (or another BEGIN) that survives the caller being cancelled.

    The statement runs on in the connection's thread whatever happens to the awaiting task;
    if the task is cancelled meanwhile, the transaction it opens must be rolled back here, or
    every later write fails with "cannot start a transaction within a transaction".
    """
    begin = asyncio.ensure_future(conn.execute(statement))
    try:
        await asyncio.shield(begin)
    except asyncio.CancelledError:
        await asyncio.shield(_undo_begin(begin, conn))
        raise


async def _undo_begin(begin: asyncio.Future[Any], conn: aiosqlite.Connection) -> None:
    try:
        await begin
    except Exception:
        return  # BEGIN itself failed: no transaction was opened
    await conn.rollback()


def _connect_inline(path: Path) -> sqlite3.Connection:
    """A connection for the loop thread: autocommit, busy timeout 0 (callers retry with
    :func:`retry_busy`, so a lock held elsewhere never blocks the loop), no automatic
    checkpoint (see :class:`Checkpointer`). check_same_thread=False: closing may happen
    from another thread at interpreter exit; statements run on the loop thread only."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    for pragma in ("foreign_keys = ON", "busy_timeout = 0", "synchronous = NORMAL",
                   "wal_autocheckpoint = 0"):
        conn.execute(f"PRAGMA {pragma}").fetchall()
    return conn


async def _connect(path: Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> aiosqlite.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves; autocommit otherwise.
    conn = await aiosqlite.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
    try:
        conn.row_factory = aiosqlite.Row
        for pragma in ("foreign_keys = ON", f"busy_timeout = {busy_timeout_ms}",
                       "synchronous = NORMAL"):
            await _pragma(conn, pragma)
    except BaseException:
        await conn.close()  # a leaked connection's thread would keep the process alive
        raise
    return conn


async def _pragma(conn: aiosqlite.Connection | InlineWriter, pragma: str) -> None:
    # Finish the statement at once: an open PRAGMA cursor can hold a lock on the file.
    async with conn.execute(f"PRAGMA {pragma}") as cursor:
        await cursor.fetchall()


async def fetch_one(conn: Connection, sql: str, params: Any = ()) -> Any:
    """First row of ``sql`` in ONE trip to the connection's thread.

    ``execute`` + ``fetchone`` + ``close`` as separate awaits cost three thread hops (they
    dominated the ledger benchmark) and leave the statement open between them (see
    :meth:`Database.fetchall`).
    """
    rows = await conn.execute_fetchall(sql, params)
    return next(iter(rows), None)


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements, buffer = [], ""
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        buffer += line + "\n"
        if buffer.strip().endswith(";") and (
            "BEGIN" not in buffer.upper() or buffer.strip().upper().endswith("END;")
        ):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
