"""Every bad input gets a clear error naming the field, and changes nothing in the file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from bot.core.errors import InvalidRequest, JobNotFound
from bot.core.service import MusicService

from .conftest import destination, make_config, member, music, order, snapshot

BAD_NUMBERS = [-5, 0, 2.5, math.nan, math.inf, -math.inf, 10**12, "ten", "", None, True,
               False, "1e400", "nan", [10], {"n": 1}]
BAD_IDS = ["", "a b", "x" * 500, "<@123>", "\x00", 3.5, True, "ünïcode"]


@pytest.fixture
async def alice_has_history(service: MusicService) -> MusicService:
    """A service where alice and an admin already exist, so 'unchanged' means something."""
    await order(service, member())
    await service.grant(member("mod", admin=True), "alice", 5)
    return service


def _refused(service: MusicService) -> Any:
    """Context: the block must raise InvalidRequest and leave ledger and accounts unchanged."""

    class Check:
        async def __aenter__(self) -> Check:
            self.before = snapshot(service.config.database_path)
            return self

        async def __aexit__(self, kind: Any, error: Any, tb: Any) -> bool:
            assert isinstance(error, InvalidRequest), f"expected InvalidRequest, got {error!r}"
            assert error.user_message.startswith(f"Invalid {error.field}:")
            self.error = error
            assert snapshot(service.config.database_path) == self.before
            return True

    return Check()


@pytest.mark.parametrize("amount", [a for a in BAD_NUMBERS if a != 0] + [0])
@pytest.mark.parametrize("action", ["grant", "take"])
async def test_bad_token_amounts_are_refused(
    alice_has_history: MusicService, action: str, amount: object
) -> None:
    service = alice_has_history
    async with _refused(service) as check:
        await getattr(service, action)(member("mod", admin=True), "alice", amount, "why")
    assert check.error.field == "amount"


@pytest.mark.parametrize("amount", [a for a in BAD_NUMBERS if a not in (0, False)])
async def test_bad_balance_to_set_is_refused(
    alice_has_history: MusicService, amount: object
) -> None:
    async with _refused(alice_has_history) as check:
        await alice_has_history.set_balance(member("mod", admin=True), "alice", amount)
    assert check.error.field == "amount"


@pytest.mark.parametrize(
    "duration", [d for d in BAD_NUMBERS if d != 2.5] + [0.5, 31, "31 seconds", "-1s"])
async def test_bad_durations_are_refused_and_nothing_is_charged(
    alice_has_history: MusicService, duration: object
) -> None:
    service = alice_has_history
    async with _refused(service) as check:
        await order(service, member(), music(duration=duration))
    assert check.error.field == "duration"
    with pytest.raises(InvalidRequest, match="duration"):
        service.price(duration)


@pytest.mark.parametrize("duration", ["7.5", "7.5s", " 8 ", 7.54, 7.5])
async def test_durations_written_as_text_are_understood(
    service: MusicService, duration: object
) -> None:
    receipt = await order(service, member(), music(duration=duration))
    # 2 tokens a second, rounded to 0.1 s: 7.5 s costs 15, 8 s costs 16.
    assert (receipt.job.params.duration, receipt.price) in ((7.5, 15), (8.0, 16))


@pytest.mark.parametrize("user", BAD_IDS)
async def test_unknown_or_malformed_member_ids_are_refused(
    alice_has_history: MusicService, user: object
) -> None:
    service = alice_has_history
    admin = member("mod", admin=True)
    for call in (lambda: service.grant(admin, user, 5), lambda: service.balance(admin, user),
                 lambda: service.ledger(admin, user), lambda: service.take(admin, user, 1),
                 lambda: service.set_balance(admin, user, 1)):
        async with _refused(service) as check:
            await call()
        assert check.error.field == "member"


@pytest.mark.parametrize("job_id", ["", "a b", "x" * 500, "12abc", -3, 0, math.nan, None])
async def test_malformed_job_ids_are_refused(
    alice_has_history: MusicService, job_id: object
) -> None:
    service = alice_has_history
    for call in (lambda: service.get_job(job_id),
                 lambda: service.reroll(member(), job_id, destination(member()), "k1")):
        async with _refused(service) as check:
            await call()
        assert check.error.field == "job"


async def test_unknown_job_id_is_not_found(alice_has_history: MusicService) -> None:
    before = snapshot(alice_has_history.config.database_path)
    with pytest.raises(JobNotFound, match="#424242"):
        await alice_has_history.get_job("#424242")
    with pytest.raises(JobNotFound):
        await alice_has_history.reroll(member(), 424242, destination(member()), "k2")
    assert snapshot(alice_has_history.config.database_path) == before


@pytest.mark.parametrize(("prompt", "reason"), [
    ("", "empty"),
    ("   \n\t ", "empty"),
    ("x" * 10_000, "must be at most 400 characters (this is 10000)"),
    ("lofi\x00beat", "control"),
    ("\x1b[31mred\x1b[0m", "control"),
    ("zero\u200bwidth", "invisible"),
    (None, "must be text"),
    (42, "must be text"),
])
async def test_bad_prompts_are_refused(
    alice_has_history: MusicService, prompt: object, reason: str
) -> None:
    async with _refused(alice_has_history) as check:
        await order(alice_has_history, member(), music(prompt))
    assert check.error.field == "prompt" and reason in check.error.reason


async def test_prompt_whitespace_is_tidied(service: MusicService) -> None:
    receipt = await order(service, member(), music("  calm\n\n piano\t jazz  "))
    assert receipt.job.params.prompt == "calm piano jazz"


@pytest.mark.parametrize(("fields", "field"), [
    ({"model": "gpt-4"}, "model"),
    ({"model": 7}, "model"),
    ({"format": "exe"}, "format"),
    ({"format": 3}, "format"),
    ({"seed": "lucky"}, "seed"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**40}, "seed"),
    ({"temperature": math.nan}, "temperature"),
    ({"temperature": 0}, "temperature"),
    ({"top_k": 2.5}, "top_k"),
    ({"top_p": 1.5}, "top_p"),
    ({"cfg": "-inf"}, "cfg"),
    ({"tempo": 1000}, "tempo"),
    ({"genre": "x" * 41}, "genre"),
    ({"genre": "jazz\x07"}, "genre"),
])
async def test_bad_options_are_refused_naming_the_option(
    alice_has_history: MusicService, fields: dict[str, object], field: str
) -> None:
    async with _refused(alice_has_history) as check:
        await order(alice_has_history, member(), music(**fields))
    assert check.error.field == field


@pytest.mark.parametrize("key", ["", "k" * 201, None, 5])
async def test_missing_or_huge_request_id_is_refused(
    alice_has_history: MusicService, key: object
) -> None:
    alice = member()
    async with _refused(alice_has_history) as check:
        await alice_has_history.request_music(alice, music(), destination(alice), key)  # type: ignore[arg-type]
    assert check.error.field == "request id"


@pytest.mark.parametrize("prompt", ["some BadWord here", "badword", "x, badword!"])
async def test_blocked_words_are_refused(
    open_service: Any, tmp_path: Path, prompt: str
) -> None:
    config = make_config(tmp_path, limits={"blocked_words": ["badword"]})
    service = await open_service(config)
    async with _refused(service) as check:
        await order(service, member(), music(prompt))
    assert check.error.field == "prompt" and "not allowed" in check.error.reason
    async with _refused(service) as check:
        await order(service, member(), music("fine", genre="badword"))
    assert check.error.field == "genre"
    # A word merely containing the blocked one is fine.
    assert (await order(service, member(), music("badwordsmith"))).price == 10


async def test_model_not_loaded_on_this_bot_is_refused(service: MusicService) -> None:
    service.available_models = frozenset({"small"})
    async with _refused(service) as check:
        await order(service, member(), music(model="large"))
    assert check.error.field == "model" and "not loaded" in check.error.reason
