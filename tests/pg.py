"""A throw-away PostgreSQL 15 server for the tests, and a plain (sync) client to inspect it.

``MUSICBOT_TEST_DB=postgres`` runs the storage, core and e2e tests against PostgreSQL: the
session starts one cluster (Debian's ``initdb`` + ``pg_ctl``, in a temp directory, on a
free local port, its unix socket in that directory), migrates a template database once, and
every test gets a fresh database copied from it (``CREATE DATABASE ... TEMPLATE``: a file
copy, milliseconds). The server is stopped at session end.

PostgreSQL refuses to run as root; under root (CI containers) the cluster runs as the
unprivileged ``nobody`` user (its files in a directory that user owns).

Import path for other suites: ``from tests.pg import PgServer, pg_server, test_database,
test_database_for, wanted, SyncPg``.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from bot.core.pg import bind

PG_BIN = Path(os.environ.get("MUSICBOT_PG_BIN", "/usr/lib/postgresql/15/bin"))
TEMPLATE = "musicbot_template"


def wanted() -> bool:
    """Whether this test run is the PostgreSQL one (``MUSICBOT_TEST_DB=postgres``)."""
    return os.environ.get("MUSICBOT_TEST_DB", "sqlite").lower() in ("postgres", "postgresql", "pg")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster in a temp directory; ``url(db)`` names a database on it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="musicbot-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._names = itertools.count(1)
        self._user: pwd.struct_passwd | None = pwd.getpwnam("nobody") if os.geteuid() == 0 else None

    def _run(self, *args: str) -> None:
        kwargs: dict[str, Any] = {"check": True, "capture_output": True, "cwd": self.root,
                                  "timeout": 120}
        if self._user is not None:
            user = self._user
            # user=/group= switch in the forked child without running Python there
            # (preexec_fn can deadlock once the test process has threads)
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
            kwargs["env"] = {**os.environ, "HOME": str(self.root)}
        try:
            subprocess.run(args, **kwargs)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"{args[0]} failed: {exc.stderr.decode(errors='replace')}") from exc
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{args[0]} did not finish in {exc.timeout:.0f} s") from exc

    def start(self) -> PgServer:
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "musicbot",
                  "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=300")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                  "-o", options, "-w", "start")
        _in_thread(self._admin(f"CREATE DATABASE {TEMPLATE}"))
        _in_thread(self._migrate_template())
        return self

    def stop(self) -> None:
        try:
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        # the unix socket: a third less time per round trip than TCP on 127.0.0.1
        return f"postgresql://musicbot@/{database}?host={self.root}&port={self.port}"

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.url("postgres"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def _migrate_template(self) -> None:
        from bot.core.db import Database

        db = await Database(self.url(TEMPLATE)).open()
        await db.close()

    def new_database(self) -> str:
        """A fresh, migrated database (copied from the template); returns its URL."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        _in_thread(self._admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
        return self.url(name)


def _in_thread(coro: Any) -> Any:
    """Run ``coro`` on a private event loop (callers may be inside pytest-asyncio's loop)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


_server: PgServer | None = None


def pg_server() -> PgServer:
    """The session's server, started on first use (stopped by :func:`stop_server`)."""
    global _server
    if _server is None:
        _server = PgServer().start()
        atexit.register(stop_server)  # also when the run is interrupted before sessionfinish
    return _server


def stop_server() -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None


def test_database() -> str:
    """URL of a fresh migrated database on the session's server."""
    return pg_server().new_database()


test_database.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name


_pg_databases: dict[Path, str] = {}


def test_database_for(tmp_path: Path, name: str = "bot.sqlite3") -> str:
    """The test's database: ``bot.sqlite3`` in ``tmp_path``, or with MUSICBOT_TEST_DB=postgres
    a fresh PostgreSQL database (one per ``tmp_path``, so configs made twice in one test
    share it, like the file)."""
    if not wanted():
        return str(tmp_path / name)
    if tmp_path not in _pg_databases:
        _pg_databases[tmp_path] = test_database()
    return _pg_databases[tmp_path]


test_database_for.__test__ = False  # type: ignore[attr-defined]


def database_of(tmp_path: Path) -> str:
    """The PostgreSQL URL :func:`test_database_for` gave ``tmp_path`` ('' if none)."""
    return _pg_databases.get(tmp_path, "")


# ----------------------------------------------------------------- sync inspection client


class _Rows:
    """The rows of one statement, like a ``sqlite3.Cursor`` (iterate, fetchone, fetchall)."""

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows
        self._it = iter(rows)

    def __iter__(self) -> Iterator[Any]:
        return self._it

    def fetchone(self) -> Any:
        return next(self._it, None)

    def fetchall(self) -> list[Any]:
        return list(self._it)


class SyncPg:
    """A plain connection for test assertions, with ``sqlite3.Connection``'s shape: the
    tests' checks (``raw(db_path).execute(sql, params)``) read PostgreSQL unchanged.
    Autocommit: sees only what was committed, like a second sqlite3 connection."""

    row_factory: Any = None

    def __init__(self, url: str) -> None:
        self.url = url

    def execute(self, sql: str, params: Any = ()) -> _Rows:
        sql = sql.replace("WHERE 1 ", "WHERE TRUE ")  # sqlite's "WHERE 1" idiom
        text, args = bind(sql, params)
        return _Rows(_in_thread(self._fetch(text, tuple(args))))

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        conn = await asyncpg.connect(self.url)
        try:
            return list(await conn.fetch(sql, *params))
        except asyncpg.UniqueViolationError as exc:
            raise sqlite3.IntegrityError(f"UNIQUE constraint failed: {exc}") from exc
        except (asyncpg.IntegrityConstraintViolationError, asyncpg.RaiseError) as exc:
            # a CHECK, a foreign key, or the ledger's append-only trigger: what sqlite3 calls
            # an IntegrityError, so the tests' expectations read the same on both backends
            raise sqlite3.IntegrityError(str(exc)) from exc
        finally:
            await conn.close()

    def commit(self) -> None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> SyncPg:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
