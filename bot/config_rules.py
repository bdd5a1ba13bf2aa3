"""The vocabulary of the config schema: value types, rules, and pydantic errors as ConfigErrors.

:mod:`bot.config` writes each setting as ``Annotated[Int, at_least(1)]`` and the like; this
module turns what pydantic reports into one :class:`~bot.errors.ConfigError` whose key is the
setting's dotted path (``limits.rate_limit.count``) and whose reason an operator can act on.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from pydantic import AfterValidator, AllowInfNan, BeforeValidator, Strict
from pydantic_core import ErrorDetails, PydanticCustomError

from bot.errors import ConfigError

RULE = "config_rule"
"""The pydantic error type of every rule here (its context carries the reason)."""


def rule(ok: Callable[[Any], bool], reason: str) -> AfterValidator:
    """A check whose failure message is ``reason``, reported under the value's key."""

    def check(value: Any) -> Any:
        if not ok(value):
            raise PydanticCustomError(RULE, "{reason}", {"reason": reason})
        return value

    return AfterValidator(check)


def broken(key: str, reason: str) -> PydanticCustomError:
    """A cross-field rule's failure, reported under ``key`` (relative to the section)."""
    return PydanticCustomError(RULE, "{reason}", {"reason": reason, "field": key})


def at_least(low: float, reason: str = "") -> AfterValidator:
    """``value >= low``."""
    return rule(lambda v: v >= low, reason or f"must be at least {low}")


def at_most(high: float, reason: str = "") -> AfterValidator:
    """``value <= high``."""
    return rule(lambda v: v <= high, reason or f"must be at most {high}")


def span(low: float, high: float, reason: str = "") -> AfterValidator:
    """``low <= value <= high``."""
    return rule(lambda v: low <= v <= high, reason or f"must be {low}..{high}")


def _number_to_text(value: Any) -> Any:
    # Ids written without quotes in YAML (owners: [1234]) arrive as numbers.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


# Strict: YAML already gives typed values, so "4" for a number or 1 for true is a mistake.
Int = Annotated[int, Strict()]
Number = Annotated[float, Strict(), AllowInfNan(False)]
Flag = Annotated[bool, Strict()]
Text = Annotated[str, Strict(), BeforeValidator(_number_to_text)]
NotNegative = at_least(0, "must be 0 or more")
Positive = rule(lambda v: v > 0, "must be positive")


def first_error(errors: Iterable[ErrorDetails], root: type) -> ConfigError:
    """The error to show of those pydantic found validating dataclass ``root``."""
    # An unknown key is usually a typo that explains the other errors: report it first.
    ordered = sorted(errors, key=lambda e: e["type"] != "unexpected_keyword_argument")
    return _config_error(ordered[0], root)


def _config_error(error: ErrorDetails, root: type) -> ConfigError:
    loc, kind, value = error["loc"], error["type"], error["input"]
    key = _dotted(loc)
    context = error.get("ctx") or {}
    if kind == RULE:
        where = context.get("field")
        return ConfigError(f"{key}.{where}" if key and where else where or key, context["reason"])
    if kind == "unexpected_keyword_argument":
        if loc[-1] in ("secrets", "discord_token", "token"):
            return ConfigError(key, "secrets are read only from the environment, never the file")
        known = ", ".join(_known_settings(root, loc))
        return ConfigError(key, f"unknown setting (known: {known})")
    if isinstance(value, float) and not math.isfinite(value):
        return ConfigError(key, f"must be a finite number, got {value}")  # .nan, .inf in YAML
    reason = _TYPE_REASONS.get(kind.split("_")[0])
    return ConfigError(key or "(top level)",
                       reason.format(got=kind_of(value)) if reason else error["msg"].lower())


# By the first word of pydantic's error type (int_type, int_from_float, finite_number...).
_TYPE_REASONS = {
    "int": "expected a whole number, got {got}",
    "float": "expected a number, got {got}",
    "finite": "expected a number, got {got}",
    "bool": "expected true or false, got {got}",
    "string": "expected text, got {got}",
    "list": "expected a list, got {got}",
    "dict": "expected a mapping, got {got}",
    "dataclass": "expected a mapping of settings, got {got}",
}


def _dotted(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
    return key


def _known_settings(root: type, loc: tuple[int | str, ...]) -> list[str]:
    """The settings of the section that holds ``loc`` (for the unknown-key message)."""
    node: Any = root
    for part in loc[:-1]:
        if dataclasses.is_dataclass(node):
            node = typing.get_type_hints(node)[str(part)]
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]  # part is a key of the mapping
    if not dataclasses.is_dataclass(node):
        return []
    return sorted(f.name for f in dataclasses.fields(node) if not f.metadata.get("env_only"))


def kind_of(value: Any) -> str:
    """A few words saying what ``value`` is, for "expected X, got Y" messages."""
    if value is None:
        return "nothing"
    return {bool: "true/false", int: f"the number {value}", float: f"the number {value}",
            str: f"text {value!r}"[:60], list: "a list", dict: "a mapping"}.get(
                type(value), type(value).__name__)
