"""Balances and the append-only ledger. Every function runs inside a write transaction.

The stored balance always equals the sum of the account's ledger entries: each change is one
conditional ``UPDATE ... RETURNING balance`` followed by the ledger ``INSERT`` in the same
transaction. Debits never read-then-write across awaits (the classic double spend).
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from bot.config import EconomyConfig
from bot.core.db import fetch_one as one
from bot.core.db import on_postgres
from bot.core.errors import InsufficientTokens, InvalidRequest
from bot.core.models import AccountKey, LedgerEntry, LedgerKind

DAY_S = 86_400
MAX_BALANCE = 1_000_000_000
"""Cap on what admins and allowances can bring a balance to. Refunds ignore it: giving back
tokens that were taken must never fail (see docs/guarantees.md)."""


@dataclass(frozen=True)
class Account:
    id: int
    key: AccountKey
    balance: int


async def ensure_account(
    conn: aiosqlite.Connection, key: AccountKey, economy: EconomyConfig, now: float
) -> Account:
    """Return the account, creating it with the starting balance and applying any allowance.

    The account row stays locked until the transaction ends (PostgreSQL: ``FOR UPDATE``;
    SQLite's writer is already alone), so the caller's read-then-write steps (limits, the
    allowance, ``set``) see no concurrent change to this member.
    """
    row = await _account_row(conn, key, lock=True)  # the common case: one query
    if row is None:
        row = await _create_account(conn, key, economy, now)
    account_id, balance, allowance_day = row
    if economy.daily_allowance > 0:
        balance = await _apply_allowance(conn, account_id, balance, allowance_day, economy, now)
    return Account(account_id, key, balance)


async def _create_account(
    conn: aiosqlite.Connection, key: AccountKey, economy: EconomyConfig, now: float
) -> tuple[int, int, int]:
    created = await one(
        conn,
        "INSERT INTO accounts (platform, community, user, balance, allowance_day, created_at) "
        "VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT (platform, community, user) DO NOTHING "
        "RETURNING id",
        (key.platform, key.community, key.user, int(now // DAY_S), now),
    )
    if created is not None and economy.starting_balance > 0:
        await _change(conn, created[0], economy.starting_balance, LedgerKind.STARTING,
                      actor="system", reason="welcome", now=now)
    row = await _account_row(conn, key, lock=True)
    assert row is not None
    return row


async def peek_balance(
    conn: aiosqlite.Connection, key: AccountKey, economy: EconomyConfig, now: float
) -> int:
    """The balance ``ensure_account`` would return, without writing anything.

    No account yet: the starting balance. A pending daily allowance is included.
    """
    row = await _account_row(conn, key)
    if row is None:
        return economy.starting_balance
    _, balance, allowance_day = row
    if economy.daily_allowance > 0:
        balance += _allowance_due(balance, allowance_day, economy, now)[0]
    return balance


def _allowance_due(
    balance: int, allowance_day: int, economy: EconomyConfig, now: float
) -> tuple[int, int]:
    """(tokens to add, days missed) for an account last topped up on ``allowance_day``."""
    days = int(now // DAY_S) - allowance_day
    if days <= 0:
        return 0, 0
    return max(0, min(economy.allowance_cap - balance, economy.daily_allowance * days)), days


async def find_account(conn: aiosqlite.Connection, key: AccountKey) -> Account | None:
    row = await _account_row(conn, key)
    return Account(row[0], key, row[1]) if row else None


async def debit(
    conn: aiosqlite.Connection, account: Account, amount: int, kind: LedgerKind, *,
    job_id: int | None, actor: str, reason: str, now: float,
) -> int:
    """Take ``amount`` tokens in one conditional UPDATE; raise InsufficientTokens otherwise."""
    balance = await _write_change(
        conn, account.id, -amount, "balance >= :amount", {"amount": amount},
        kind, job_id, actor, reason, now)
    if balance is None:
        current = await _balance(conn, account.id)
        raise InsufficientTokens(balance=current, price=amount)
    return balance


async def credit(
    conn: aiosqlite.Connection, account_id: int, amount: int, kind: LedgerKind, *,
    job_id: int | None, actor: str, reason: str, now: float,
) -> int:
    """Add ``amount`` tokens; refuses to push a balance past MAX_BALANCE (refunds excepted)."""
    cap = None if kind is LedgerKind.REFUND else MAX_BALANCE
    return await _change(conn, account_id, amount, kind, job_id=job_id, actor=actor,
                         reason=reason, now=now, cap=cap)


async def set_balance(
    conn: aiosqlite.Connection, account: Account, amount: int, *, actor: str, reason: str,
    now: float,
) -> int:
    """Set the balance to ``amount``, writing the difference to the ledger."""
    current = await _balance(conn, account.id)
    if amount == current:
        await _insert_entry(conn, account.id, 0, current, LedgerKind.SET, None, actor, reason, now)
        return current
    return await _change(conn, account.id, amount - current, LedgerKind.SET, actor=actor,
                         reason=reason, now=now)


async def entries(
    conn: aiosqlite.Connection, *, platform: str, community: str, user: str | None, limit: int
) -> list[LedgerEntry]:
    """Newest ledger entries of one member, or of every member of a community."""
    sql = (
        "SELECT l.*, a.platform, a.community, a.user FROM ledger l "
        "JOIN accounts a ON a.id = l.account_id WHERE a.platform = ? AND a.community = ? "
    )
    params: list[object] = [platform, community]
    if user is not None:
        sql += "AND a.user = ? "
        params.append(user)
    sql += "ORDER BY l.id DESC LIMIT ?"
    params.append(limit)
    return [entry_from_row(r) for r in await conn.execute_fetchall(sql, params)]


def entry_from_row(row: aiosqlite.Row) -> LedgerEntry:
    return LedgerEntry(
        id=row["id"],
        account=AccountKey(row["platform"], row["community"], row["user"]),
        delta=row["delta"],
        balance_after=row["balance_after"],
        kind=LedgerKind(row["kind"]),
        job_id=row["job_id"],
        actor=row["actor"],
        reason=row["reason"],
        created_at=row["created_at"],
    )


async def _change(
    conn: aiosqlite.Connection, account_id: int, delta: int, kind: LedgerKind, *,
    job_id: int | None = None, actor: str, reason: str, now: float,
    cap: int | None = MAX_BALANCE,
) -> int:
    # An uncapped change may still not go below zero; SQLite integers hold far more than any
    # balance refunds can add up to.
    # The cap is left out of the SQL when there is none: PostgreSQL cannot type "? IS NULL".
    capped = "" if cap is None else " AND balance + :delta <= :cap"
    balance = await _write_change(
        conn, account_id, delta, f"balance + :delta >= 0{capped}",
        {} if cap is None else {"cap": cap}, kind, job_id, actor, reason, now)
    if balance is None:
        raise InvalidRequest("amount", f"the balance would leave 0..{MAX_BALANCE:,}")
    return balance


async def _write_change(
    conn: aiosqlite.Connection, account_id: int, delta: int, condition: str,
    condition_params: dict[str, object], kind: LedgerKind, job_id: int | None, actor: str,
    reason: str, now: float,
) -> int | None:
    """``balance += delta`` if ``condition`` holds, and its ledger line, in one transaction;
    the new balance, or None (nothing written) when the condition fails.

    On PostgreSQL both are one statement (a data-modifying CTE: one round trip instead of
    two); SQLite runs the two statements, which cost no round trip there.
    """
    params = {"delta": delta, "account": account_id, "kind": kind.value, "job": job_id,
              "actor": actor, "reason": reason, "now": now, **condition_params}
    update = (f"UPDATE accounts SET balance = balance + :delta WHERE id = :account "
              f"AND {condition}")
    if on_postgres(conn):
        row = await one(
            conn,
            f"WITH changed AS ({update} RETURNING id, balance) INSERT INTO ledger "
            "(account_id, delta, balance_after, kind, job_id, actor, reason, created_at) "
            "SELECT id, CAST(:delta AS BIGINT), balance, CAST(:kind AS TEXT), "
            "CAST(:job AS BIGINT), CAST(:actor AS TEXT), CAST(:reason AS TEXT), "
            "CAST(:now AS DOUBLE PRECISION) FROM changed RETURNING balance_after", params)
        return None if row is None else int(row[0])
    row = await one(conn, f"{update} RETURNING balance", params)
    if row is None:
        return None
    await _insert_entry(conn, account_id, delta, row[0], kind, job_id, actor, reason, now)
    return int(row[0])


async def _apply_allowance(
    conn: aiosqlite.Connection, account_id: int, balance: int, allowance_day: int,
    economy: EconomyConfig, now: float,
) -> int:
    top_up, days = _allowance_due(balance, allowance_day, economy, now)
    if days == 0:
        return balance
    await conn.execute_fetchall("UPDATE accounts SET allowance_day = ? WHERE id = ?",
                                (int(now // DAY_S), account_id))
    if top_up == 0:
        return balance
    return await _change(conn, account_id, top_up, LedgerKind.ALLOWANCE, actor="system",
                         reason=f"daily allowance ({days} day{'s' if days > 1 else ''})", now=now)


async def _account_row(
    conn: aiosqlite.Connection, key: AccountKey, *, lock: bool = False
) -> tuple[int, int, int] | None:
    locking = " FOR UPDATE" if lock and getattr(conn, "dialect", "sqlite") == "postgres" else ""
    row = await one(
        conn,
        "SELECT id, balance, allowance_day FROM accounts "
        f"WHERE platform = ? AND community = ? AND user = ?{locking}",
        (key.platform, key.community, key.user),
    )
    return (row[0], row[1], row[2]) if row else None


async def _balance(conn: aiosqlite.Connection, account_id: int) -> int:
    row = await one(conn, "SELECT balance FROM accounts WHERE id = ?", (account_id,))
    assert row is not None
    return int(row[0])


async def _insert_entry(
    conn: aiosqlite.Connection, account_id: int, delta: int, balance_after: int,
    kind: LedgerKind, job_id: int | None, actor: str, reason: str, now: float,
) -> None:
    await conn.execute_fetchall(
        "INSERT INTO ledger (account_id, delta, balance_after, kind, job_id, actor, reason, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (account_id, delta, balance_after, kind.value, job_id, actor, reason, now),
    )
