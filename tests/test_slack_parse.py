"""What a member can type after ``/music`` in Slack, and what they are told when it is wrong."""

from __future__ import annotations

import pytest

from bot.core.models import MusicRequest
from bot.platforms.slack_parse import Parsed, UsageError, parse_command, parse_member


def music(text: str) -> MusicRequest:
    command = parse_command(text)
    assert command.command == "music"
    return command.request


def test_plain_prompt_needs_no_quotes() -> None:
    assert music("calm lo-fi piano with rain") == MusicRequest(prompt="calm lo-fi piano with rain")


@pytest.mark.parametrize(
    "text",
    [
        'lofi beat --duration 20 --seed 7 --model medium',
        '"lofi beat" --duration=20 --seed=7 --model=medium',
        "lofi --duration 20s beat --seed 7 --model medium",
        "lofi beat —duration 20 —seed 7 —model medium",  # macOS turns -- into an em dash
        "“lofi beat” --DURATION 20 --seed 7 --m medium",  # curly quotes, short flag
    ],
)
def test_flags_in_any_spelling(text: str) -> None:
    assert music(text) == MusicRequest(prompt="lofi beat", duration="20", seed="7", model="medium")


def test_every_option_reaches_the_request_raw() -> None:
    request = music(
        "jazz --temperature 0.9 --top-k 200 --top-p 0.5 --cfg 4 --genre swing --tempo 120 "
        "--format wav"
    )
    assert request == MusicRequest(
        prompt="jazz", temperature="0.9", top_k="200", top_p="0.5", cfg="4", genre="swing",
        tempo="120", format="wav",
    )


def test_unbalanced_quote_is_forgiven() -> None:
    assert music('"dreamy synth pads --seed 3').prompt == "dreamy synth pads"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "Tell me what to play"),
        ("drums --speed 3", "Unknown option `--speed`"),
        ("drums --duration", "needs a value"),
        ("drums --duration --seed 3", "needs a value"),
        ("--duration 10", "prompt is empty"),
        ("drums --seed 1 --seed 2", "given twice"),
    ],
)
def test_malformed_text_gets_the_usage(text: str, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_command(text)
    assert problem in caught.value.message
    assert "/music <prompt>" in caught.value.message


def test_subcommands() -> None:
    assert parse_command("balance") == Parsed("balance")
    assert parse_command("Balance <@U42|ann>") == Parsed("balance", {"member": "U42"})
    assert parse_command("history") == Parsed("history")
    assert parse_command("queue") == Parsed("queue")
    assert parse_command("help") == Parsed("help")
    assert parse_command("cancel") == Parsed("cancel")
    assert parse_command("cancel #12") == Parsed("cancel", {"job": 12})
    assert parse_command("price 20s --model small") == Parsed(
        "price", {"duration": "20", "model": "small"})
    assert parse_command("price 20 --format wav") == Parsed(
        "price", {"duration": "20", "format": "wav"})


@pytest.mark.parametrize("text", ["price", "price --model small"])
def test_price_needs_a_duration_as_on_discord_and_the_console(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_command(text)
    assert "needs a duration" in caught.value.message
    assert "/music price <duration>" in caught.value.message


@pytest.mark.parametrize("text", ["track 12", "track #12", "Track  #12 "])
def test_track_takes_a_job_number(text: str) -> None:
    assert parse_command(text) == Parsed("track", {"job": 12})


def test_track_without_a_job_gets_its_usage() -> None:
    with pytest.raises(UsageError) as caught:
        parse_command("track")
    assert "job number" in caught.value.message
    assert "/music track <job>" in caught.value.message


def test_prompts_that_start_like_a_subcommand_stay_prompts() -> None:
    assert music("balance of light and dark").prompt == "balance of light and dark"
    assert music("queue for the night bus").prompt == "queue for the night bus"
    assert music("price of love --genre soul").genre == "soul"
    assert music("cancel culture anthem").prompt == "cancel culture anthem"
    assert music("track meet warm-up").prompt == "track meet warm-up"
    assert music("track twelve").prompt == "track twelve"


@pytest.mark.parametrize("mention", ["<@U123ABC|ann>", "<@U123ABC>", "U123ABC", "<@W99X>"])
def test_member_mentions(mention: str) -> None:
    assert parse_member(mention) == mention.strip("<@>").split("|")[0]


def test_admin_commands() -> None:
    assert parse_command("admin grant <@U1A|bo> 50 birthday gift") == Parsed(
        "tokens grant", {"member": "U1A", "amount": 50, "reason": "birthday gift"})
    assert parse_command("admin take U1A 1,000") == Parsed(
        "tokens take", {"member": "U1A", "amount": 1000})
    assert parse_command("admin set <@U1A> 0") == Parsed("tokens set", {"member": "U1A",
                                                                       "amount": 0})
    assert parse_command("admin ledger") == Parsed("tokens ledger")
    assert parse_command("admin ledger <@U1A|bo>") == Parsed("tokens ledger", {"member": "U1A"})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("admin grant @bob 50", "not a member mention"),
        ("admin grant <@U1A> lots", "not a whole number"),
        ("admin take <@U1A>", "needs a member and an amount"),
        ("admin ledger U1A U2B", "at most one member"),
    ],
)
def test_bad_admin_arguments(text: str, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_command(text)
    assert problem in caught.value.message
    assert "/music admin" in caught.value.message
