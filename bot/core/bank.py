"""Balances, admin token operations and refunds: who may move tokens, and the moving.

Authority (docs/security.md): per-community balances are managed by that community's admins;
with ``economy.shared_balances`` a wallet spans communities, so only the operator (the
``musicbot admin`` CLI, the local console) and ``economy.wallet_admins`` may move or read other
members' wallets. Reads never create accounts. Every write is one ``BEGIN IMMEDIATE``
transaction on the store; every token that moves has a ledger line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import aiosqlite

from bot.config import Config
from bot.core import jobs, ledger, limits
from bot.core.db import Database, on_postgres
from bot.core.errors import InsufficientTokens, InvalidRequest, NotAuthorized
from bot.core.models import (
    SHARED_COMMUNITY,
    AccountKey,
    Actor,
    Job,
    JobState,
    LedgerEntry,
    LedgerKind,
)
from bot.core.requests import validate_amount, validate_text, validate_user_id


class Bank:
    """The token side of the core: balances, grant/take/set, ledger reads, refunds."""

    def __init__(self, config: Config, db: Database, *, clock: Callable[[], float] = time.time):
        self.config = config
        self.db = db
        self._clock = clock

    def account_key(self, platform: str, community: str, user: str) -> AccountKey:
        """The account a member's tokens live in (shared across communities if configured)."""
        if self.config.economy.shared_balances:
            community = SHARED_COMMUNITY
        return AccountKey(platform, community, user)

    def may_manage(self, actor: Actor) -> bool:
        """Whether ``actor`` may move or read other members' tokens in its community."""
        if actor.operator:
            return True
        if self.config.economy.shared_balances:
            return f"{actor.platform}:{actor.user}" in self.config.economy.wallet_admins
        return actor.is_admin

    async def balance(self, actor: Actor, member: object = None) -> int:
        """Balance of the actor, or of ``member`` (admins only). Creates nothing.

        A member who has no account yet sees the starting balance they will get.
        """
        user = actor.user if member is None else validate_user_id("member", member)
        if user != actor.user and not self.may_manage(actor):
            raise NotAuthorized("see other members' balances")
        key = self.account_key(actor.platform, actor.community, user)
        async with self.db.reader_snapshot() as conn:
            return await ledger.peek_balance(conn, key, self.config.economy, self._clock())

    async def adjust(
        self, admin: Actor, action: str, member: object, amount: object, reason: str = ""
    ) -> int:
        """``grant``, ``take`` or ``set`` a member's tokens. Returns the new balance.

        Raises NotAuthorized, or InvalidRequest (bad member/amount, a take past zero, a
        grant/set past the cap) with nothing changed.
        """
        if action not in ("grant", "take", "set"):
            raise InvalidRequest("action", "use grant, take or set")
        if not self.may_manage(admin):
            raise NotAuthorized(self._manage_what())
        user = validate_user_id("member", member)
        tokens = validate_amount(amount, allow_zero=action == "set")
        note = validate_text(self.config, "reason", reason or "", limits.REASON.max_chars)
        key = self.account_key(admin.platform, admin.community, user)
        now = self._clock()
        async with self.db.write() as conn:
            account = await ledger.ensure_account(conn, key, self.config.economy, now)
            if action == "grant":
                return await ledger.credit(conn, account.id, tokens, LedgerKind.GRANT,
                                           job_id=None, actor=admin.user, reason=note, now=now)
            if action == "set":
                return await ledger.set_balance(conn, account, tokens, actor=admin.user,
                                                reason=note, now=now)
            try:
                return await ledger.debit(conn, account, tokens, LedgerKind.TAKE, job_id=None,
                                          actor=admin.user, reason=note, now=now)
            except InsufficientTokens as exc:
                raise InvalidRequest(
                    "amount", f"the member has only {exc.balance} tokens") from None

    async def entries(
        self, admin: Actor, member: object = None, limit: int = 20
    ) -> list[LedgerEntry]:
        """Newest ledger entries of a member, or of the whole community. Admins only."""
        if not self.may_manage(admin):
            raise NotAuthorized("read the token ledger: it is for "
                                + ("the bot's operators" if self.config.economy.shared_balances
                                   else "admins of this community"))
        user = None if member is None else validate_user_id("member", member)
        key = self.account_key(admin.platform, admin.community, admin.user)
        async with self.db.reader_snapshot() as conn:
            return await ledger.entries(conn, platform=key.platform, community=key.community,
                                        user=user, limit=page_size(limit))

    @staticmethod
    async def refund(conn: aiosqlite.Connection, job: Job, now: float) -> None:
        """Credit a failed/cancelled job's ``refunded`` tokens (inside the caller's
        transaction, the one that ended the job). Never capped: it cannot fail on a big
        balance, and the ledger's unique index makes a second refund impossible."""
        if job.refunded <= 0:
            return
        account_id = job.account_id
        if account_id is None:  # a job not read from the database: look its member up
            account = await ledger.find_account(conn, job.account)
            assert account is not None
            account_id = account.id
        await ledger.credit(conn, account_id, job.refunded, LedgerKind.REFUND, job_id=job.id,
                            actor="system", reason=job.error or "", now=now)

    @staticmethod
    async def end_refunded(
        conn: aiosqlite.Connection, job_id: int, state: JobState, *, error: str | None,
        now: float, from_states: Sequence[JobState] = (JobState.QUEUED, JobState.RUNNING),
        owner: str | None = None,
    ) -> Job | None:
        """End a live job as failed or cancelled (:func:`bot.core.jobs.finish`) and refund
        it (:meth:`refund`), in the caller's transaction; None if the job was not live.

        On PostgreSQL both are one statement (the job's UPDATE, the balance's and the
        refund's ledger line as data-modifying CTEs): one round trip instead of two.
        """
        if not on_postgres(conn):
            ended = await jobs.finish(conn, job_id, state, error=error, now=now,
                                      from_states=from_states, owner=owner)
            if ended is not None:
                await Bank.refund(conn, ended, now)
            return ended
        update, params = jobs.finish_statement(job_id, state, error=error, now=now,
                                               from_states=from_states, owner=owner)
        rows = list(await conn.execute_fetchall(
            f"WITH j AS ({update} RETURNING *), "
            "changed AS (UPDATE accounts a SET balance = a.balance + j.refunded FROM j "
            "WHERE a.id = j.account_id AND j.refunded > 0 "
            "RETURNING a.id, a.balance, j.id AS job_id, j.refunded, j.error), "
            "entry AS (INSERT INTO ledger (account_id, delta, balance_after, kind, job_id, "
            "actor, reason, created_at) SELECT id, refunded, balance, 'refund', job_id, "
            "'system', COALESCE(error, ''), CAST(? AS DOUBLE PRECISION) FROM changed) "
            "SELECT j.*, a.platform, a.community, a.user FROM j "
            "JOIN accounts a ON a.id = j.account_id", (*params, now)))
        return jobs.job_from_row(rows[0]) if rows else None

    def _manage_what(self) -> str:
        if self.config.economy.shared_balances:
            return "manage shared wallets (the bot's operators)"
        return "manage tokens in this community"


def page_size(limit: int) -> int:
    """A list length a member may ask for (1..200)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 200:
        raise InvalidRequest("limit", "must be a whole number between 1 and 200")
    return limit
