"""Admin token commands, shared balances and the daily allowance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.core.errors import InsufficientTokens, InvalidRequest, NotAuthorized
from bot.core.models import Actor, LedgerKind
from bot.core.service import MusicService

from .conftest import (
    PLATFORM,
    Clock,
    assert_books_balance,
    ledger_rows,
    make_config,
    member,
    order,
    snapshot,
)

MOD = member("mod", admin=True)


async def test_grant_take_and_set_are_written_with_actor_and_reason(
    service: MusicService,
) -> None:
    assert await service.grant(MOD, "alice", 50, "won the  contest") == 150
    assert await service.take(MOD, "alice", 30, "spam") == 120
    assert await service.set_balance(MOD, "alice", 75, "reset") == 75
    assert await service.set_balance(MOD, "alice", 75, "again") == 75

    entries = await service.ledger(MOD, "alice")
    assert [(e.kind, e.delta, e.balance_after, e.actor, e.reason) for e in entries] == [
        (LedgerKind.SET, 0, 75, "mod", "again"),
        (LedgerKind.SET, -45, 75, "mod", "reset"),
        (LedgerKind.TAKE, -30, 120, "mod", "spam"),
        (LedgerKind.GRANT, 50, 150, "mod", "won the contest"),
        (LedgerKind.STARTING, 100, 100, "system", "welcome"),
    ]
    assert await service.balance(member("alice")) == 75
    assert_books_balance(service.config.database_path)


async def test_set_to_zero_is_allowed(service: MusicService) -> None:
    assert await service.set_balance(MOD, "alice", 0, "banned") == 0
    with pytest.raises(InsufficientTokens, match="Not enough tokens"):
        await order(service, member("alice"))


@pytest.mark.parametrize("action", ["grant", "take", "set_balance"])
async def test_non_admin_cannot_move_tokens(service: MusicService, action: str) -> None:
    await service.balance(member("alice"))
    before = snapshot(service.config.database_path)

    with pytest.raises(NotAuthorized, match="not allowed to manage tokens"):
        await getattr(service, action)(member("mallory"), "alice", 5, "free money")

    assert snapshot(service.config.database_path) == before


async def test_the_ledger_is_for_admins_only(service: MusicService) -> None:
    await order(service, member("alice"))
    with pytest.raises(NotAuthorized, match="admins of this community"):
        await service.ledger(member("alice"))
    with pytest.raises(NotAuthorized):
        await service.ledger(member("mallory"), "alice")
    entries = await service.ledger(MOD, "alice")
    assert [e.kind for e in entries] == [LedgerKind.CHARGE, LedgerKind.STARTING]


async def test_taking_more_than_the_balance_is_refused(service: MusicService) -> None:
    await service.balance(member("alice"))
    before = snapshot(service.config.database_path)

    with pytest.raises(InvalidRequest, match="the member has only 100 tokens"):
        await service.take(MOD, "alice", 101)

    assert snapshot(service.config.database_path) == before


async def test_admin_acts_only_in_their_own_community(service: MusicService) -> None:
    other_mod = member("mod", community="guild-2", admin=True)
    await service.grant(other_mod, "alice", 40)

    assert await service.balance(member("alice", community="guild-2")) == 140
    assert await service.balance(member("alice", community="guild-1")) == 100
    assert await service.ledger(MOD) == []  # reading a balance creates no account


async def test_reading_balances_creates_nothing_and_others_are_for_admins(
    service: MusicService,
) -> None:
    before = snapshot(service.config.database_path)
    assert await service.balance(member("alice")) == 100  # what alice will start with
    assert await service.balance(MOD, "bob") == 100
    assert snapshot(service.config.database_path) == before
    with pytest.raises(NotAuthorized, match="see other members' balances"):
        await service.balance(member("mallory"), "alice")


async def test_shared_balances_give_one_balance_across_communities(
    open_service: Any, tmp_path: Path
) -> None:
    service = await open_service(make_config(tmp_path, economy={"shared_balances": True}))
    await order(service, member("alice", community="guild-1"))
    await order(service, member("alice", community="guild-2"))

    assert await service.balance(member("alice", community="guild-3")) == 80
    before = snapshot(service.config.database_path)
    # A community admin does not run a wallet that spans other communities.
    with pytest.raises(NotAuthorized, match="shared wallets"):
        await service.grant(member("mod", "guild-2", admin=True), "alice", 5)
    with pytest.raises(NotAuthorized):
        await service.balance(member("mod", "guild-2", admin=True), "alice")
    with pytest.raises(NotAuthorized):
        await service.ledger(member("mod", "guild-2", admin=True))
    assert snapshot(service.config.database_path) == before


async def test_shared_wallets_are_moved_by_the_operators_only(
    open_service: Any, tmp_path: Path
) -> None:
    config = make_config(tmp_path, economy={"shared_balances": True,
                                            "wallet_admins": ["console:boss"]})
    service = await open_service(config)
    await order(service, member("alice", community="guild-1"))
    assert await service.grant(member("boss", "guild-2"), "alice", 5) == 95
    shell = Actor(PLATFORM, "anywhere", "shell:root", is_admin=True, operator=True)
    assert await service.take(shell, "alice", 15) == 80
    assert await service.balance(member("alice", community="guild-7")) == 80
    kinds = [e.kind for e in await service.ledger(member("boss", "guild-9"), "alice")]
    assert kinds == [LedgerKind.TAKE, LedgerKind.GRANT, LedgerKind.CHARGE, LedgerKind.STARTING]


async def test_switching_shared_balances_neither_wipes_nor_merges(
    open_service: Any, tmp_path: Path
) -> None:
    separate = await open_service(make_config(tmp_path))
    await order(separate, member("alice", community="guild-1"))  # 90 there
    await separate.grant(member("mod", "guild-2", admin=True), "alice", 20)  # 120 there
    await separate.db.close()

    shared = await open_service(make_config(tmp_path, economy={"shared_balances": True}))
    assert await shared.balance(member("alice", community="guild-1")) == 100  # a fresh one
    await order(shared, member("alice", community="guild-2"))
    await shared.db.close()

    again = await open_service(make_config(tmp_path))
    assert await again.balance(member("alice", community="guild-1")) == 90
    assert await again.balance(member("alice", community="guild-2")) == 120
    assert_books_balance(tmp_path / "bot.sqlite3")


async def test_daily_allowance_tops_up_lazily_to_the_cap(
    open_service: Any, tmp_path: Path, clock: Clock
) -> None:
    config = make_config(tmp_path, economy={"starting_balance": 50, "daily_allowance": 20,
                                            "allowance_cap": 100})
    service = await open_service(config)
    alice = member()
    for _ in range(3):
        await order(service, alice)
    assert await service.balance(alice) == 20  # no allowance on the first day

    clock.advance(86_400)
    db_path = config.database_path
    assert await service.balance(alice) == 40  # shown as due...
    assert ledger_rows(db_path, "kind = 'allowance'") == []  # ...written when alice spends

    clock.advance(5 * 86_400)
    assert (await order(service, alice)).balance == 90  # topped up to the cap, then charged
    allowances = ledger_rows(db_path, "kind = 'allowance'")
    assert [(r["delta"], r["reason"]) for r in allowances] == [
        (80, "daily allowance (6 days)")]

    await service.grant(MOD, "alice", 100)  # above the cap: the allowance never takes away
    clock.advance(86_400)
    assert await service.balance(alice) == 190
    await order(service, alice)
    assert len(ledger_rows(db_path, "kind = 'allowance'")) == 1
    assert_books_balance(db_path)
