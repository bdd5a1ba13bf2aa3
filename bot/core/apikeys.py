"""API keys: a member's credentials for the HTTP API (``/v1``).

A key is ``mb_<prefix>_<secret>``: ``prefix`` is a random public handle (the row is found by
it, and lists show it), ``secret`` 32 random bytes. Only ``sha256`` of the whole key is
stored, so a copy of the database reveals no usable key. A key acts as exactly the member who
made it, in the community where they made it: the same account (balance), and admin rights
only if the frontend vouched for them when the key was made (``Actor.is_admin`` then) — the
bank re-checks every admin action (:meth:`bot.core.bank.Bank.may_manage`), and an admin who
loses the role should have their keys revoked (docs/api.md). A key never carries the
``operator`` right. Each key has a ``webhook_secret``, shown once with the key, that signs the
webhooks of jobs made with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiosqlite

from bot.config import Config
from bot.core import limits
from bot.core.db import Database, fetch_one
from bot.core.errors import InvalidRequest, MusicBotError, NotAuthorized
from bot.core.models import Actor
from bot.core.requests import number, validate_text, validate_user_id

log = logging.getLogger(__name__)

KEY_PREFIX = "mb_"
MAX_KEYS_PER_MEMBER = 10
"""Live keys one member may hold: enough for scripts and builds, few enough to review."""
CACHE_S = 5.0
"""How long a checked key is trusted without reading its row again. A revocation made in this
process takes effect at once (it clears the cache); one made by another process (a console
beside the bot) within this many seconds."""
LAST_USED_GRANULARITY_S = 60.0
"""``last_used_at`` is written at most this often per key: a busy script must not take the
database's one writer on every request."""
LAST_USED_FLUSH_S = 1.0
"""Uses are written this long after the first one, all keys in one transaction: a request
never waits for that write (fifty scripts starting at once made fifty commits on the path
of their first requests)."""


class UnknownKey(MusicBotError):
    """A key that does not exist, was revoked, or is malformed (all look alike on purpose)."""

    code = "invalid_api_key"

    def __init__(self) -> None:
        super().__init__("The API key is missing, unknown or revoked.")


@dataclass(frozen=True)
class ApiKey:
    """One stored key (never the secret)."""

    id: int
    prefix: str
    platform: str
    community: str
    user: str
    is_admin: bool
    label: str
    webhook_secret: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class NewKey:
    """What the member sees once, privately: the key and the webhook signing secret."""

    key: ApiKey
    secret: str
    """The whole ``mb_…`` key; not stored anywhere."""
    webhook_secret: str


def hash_key(raw: str) -> str:
    """sha256 of the whole key text, hex (what the table keeps)."""
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiKeys:
    """Create, list, revoke and check API keys."""

    def __init__(self, config: Config, db: Database, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.db = db
        self._clock = clock
        self._checked: dict[str, tuple[ApiKey, float]] = {}
        """hash of a key → (its row, when read): skips a database read per API request."""
        self._used: dict[int, float] = {}
        """key id → when it was used, not yet written (see :data:`LAST_USED_FLUSH_S`)."""
        self._flusher: asyncio.Task[None] | None = None

    async def create(self, actor: Actor, label: object = "") -> NewKey:
        """A new key acting as ``actor``. Raises InvalidRequest (label, too many keys)."""
        text = validate_text(self.config, "label", label or "", limits.LABEL.max_chars)
        prefix = secrets.token_hex(6)
        raw = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        webhook_secret = "whsec_" + secrets.token_urlsafe(24)
        now = self._clock()
        async with self.db.write() as conn:
            live = await fetch_one(
                conn, "SELECT COUNT(*) FROM api_keys WHERE platform = ? AND community = ? "
                "AND user = ? AND revoked_at IS NULL",
                (actor.platform, actor.community, actor.user))
            if live is not None and live[0] >= MAX_KEYS_PER_MEMBER:
                raise InvalidRequest("key", f"you already have {MAX_KEYS_PER_MEMBER} keys; "
                                     "revoke one first")
            row = await fetch_one(
                conn, "INSERT INTO api_keys (prefix, platform, community, user, is_admin, "
                "hash, label, webhook_secret, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "RETURNING id",
                (prefix, actor.platform, actor.community, actor.user, int(actor.is_admin),
                 hash_key(raw), text, webhook_secret, now))
        assert row is not None
        key = ApiKey(int(row[0]), prefix, actor.platform, actor.community, actor.user,
                     actor.is_admin, text, webhook_secret, now, None, None)
        return NewKey(key, raw, webhook_secret)

    async def list_keys(self, actor: Actor, member: object = None) -> list[ApiKey]:
        """The member's keys (revoked ones too), newest first; another member's: admins."""
        user = self._whose(actor, member, "list other members' API keys")
        rows = await self.db.fetchall(
            "SELECT * FROM api_keys WHERE platform = ? AND community = ? AND user = ? "
            "ORDER BY id DESC", (actor.platform, actor.community, user))
        return [_key_from_row(r) for r in rows]

    async def revoke(self, actor: Actor, key_id: object = None,
                     member: object = None) -> list[ApiKey]:
        """Revoke one key (by id) or, with ``member`` and no id, all of that member's keys.

        A member revokes their own keys; admins also those of members of their community.
        Returns the keys revoked now. Raises InvalidRequest when nothing matches.
        """
        if key_id in (None, "") and member in (None, ""):
            raise InvalidRequest("key", "say which key to revoke (its number from the list)")
        user: str | None = self._whose(actor, member, "revoke other members' API keys")
        where = "platform = ? AND community = ? AND revoked_at IS NULL"
        params: list[object] = [actor.platform, actor.community]
        if key_id not in (None, ""):
            where += " AND id = ?"
            params.append(_key_number(key_id))
            if member in (None, "") and self._manages(actor):
                user = None  # an admin may revoke any key of the community by its number
        if user is not None:
            where += " AND user = ?"
            params.append(user)
        async with self.db.write() as conn:
            rows = await conn.execute_fetchall(
                f"UPDATE api_keys SET revoked_at = ? WHERE {where} RETURNING *",
                (self._clock(), *params))
        self._checked.clear()
        if not rows:
            raise InvalidRequest("key", "no such live key")
        return [_key_from_row(r) for r in rows]

    async def authenticate(self, raw: str | None) -> ApiKey:
        """The live key ``raw`` names, or UnknownKey. Compares hashes in constant time."""
        prefix = _prefix_of(raw)
        if raw is None or prefix is None:
            raise UnknownKey()
        digest = hash_key(raw)
        now = self._clock()
        cached = self._checked.get(digest)
        if cached is not None and now - cached[1] < CACHE_S:
            return cached[0]
        row = await self.db.fetchone("SELECT * FROM api_keys WHERE prefix = ?", (prefix,))
        if row is None or not hmac.compare_digest(row["hash"], digest):
            raise UnknownKey()
        key = _key_from_row(row)
        if key.revoked:
            raise UnknownKey()
        if key.last_used_at is None or now - key.last_used_at >= LAST_USED_GRANULARITY_S:
            self._note_use(key.id, now)
        self._checked[digest] = (key, now)
        return key

    async def close(self) -> None:
        """Write the uses not written yet (call before the database closes)."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        await self._write_uses()

    def _note_use(self, key_id: int, now: float) -> None:
        self._used[key_id] = now
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(
                self._write_uses_soon(), name="api-key-uses")

    async def _write_uses_soon(self) -> None:
        await asyncio.sleep(LAST_USED_FLUSH_S)
        await self._write_uses()

    async def _write_uses(self) -> None:
        used, self._used = self._used, {}
        if not used or not self.db.is_open:
            return
        try:
            async with self.db.write() as conn:
                for key_id, when in used.items():
                    await conn.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?",
                                       (when, key_id))
        except MusicBotError as exc:  # busy: the uses are a nicety, not worth a retry loop
            log.warning("API key uses not recorded: %s", exc)

    async def webhook_secret(self, key_id: int) -> str | None:
        """The secret that signs webhooks of jobs made with key ``key_id``; None once the key
        is revoked (its member no longer wants calls made in its name)."""
        row = await self.db.fetchone(
            "SELECT webhook_secret FROM api_keys WHERE id = ? AND revoked_at IS NULL", (key_id,))
        return str(row[0]) if row is not None else None

    def _manages(self, actor: Actor) -> bool:
        return actor.is_admin or actor.operator

    def _whose(self, actor: Actor, member: object, action: str) -> str:
        if member in (None, ""):
            return actor.user
        user = validate_user_id("member", member)
        if user != actor.user and not self._manages(actor):
            raise NotAuthorized(action)
        return user


def _key_number(value: object) -> int:
    """A key's number as lists show it (``#3`` or ``3``)."""
    if isinstance(value, str):
        value = value.strip().lstrip("#")
    return int(number("key", value, limits.JOB.low, limits.JOB.high, integer=True))


def _prefix_of(raw: str | None) -> str | None:
    if not raw or not raw.startswith(KEY_PREFIX) or len(raw) > 200:
        return None
    prefix, sep, secret = raw[len(KEY_PREFIX):].partition("_")
    return prefix if sep and secret and prefix.isalnum() else None


def _key_from_row(r: aiosqlite.Row) -> ApiKey:
    return ApiKey(
        id=int(r["id"]), prefix=r["prefix"], platform=r["platform"], community=r["community"],
        user=r["user"], is_admin=bool(r["is_admin"]), label=r["label"],
        webhook_secret=r["webhook_secret"], created_at=r["created_at"],
        last_used_at=r["last_used_at"], revoked_at=r["revoked_at"])
