"""The one table of option limits, owned by the core and read by every frontend.

Pure data, no I/O. :mod:`bot.core.requests` validates with it; the command catalogue
(:mod:`bot.core.catalogue`) attaches its rows to options, and every frontend's schema and help
is generated from the catalogue, so a value is accepted by one frontend exactly when the core
accepts it. Limits that depend
on the configuration (duration per model, prompt length) are read from
:class:`bot.config.LimitsConfig` through :func:`duration_range` and :func:`prompt_chars`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.config import FORMATS, Config
from bot.core.ledger import MAX_BALANCE


@dataclass(frozen=True)
class NumberLimit:
    """A numeric option: inclusive ``low``..``high``, whole numbers when ``integer``."""

    name: str
    low: float
    high: float
    integer: bool = False
    default: Any = None
    """What the core uses when the option is left out (None: no value, or chosen at random)."""

    def describe(self) -> str:
        """``temperature 0.05–5``: the option and its range, as help texts show it."""
        return f"{self.name} {show(self.low)}–{show(self.high)}"


@dataclass(frozen=True)
class TextLimit:
    """A free-text option of at most ``max_chars`` characters (after trimming spaces)."""

    name: str
    max_chars: int


SEED = NumberLimit("seed", 0, 2**32 - 1, integer=True)
TEMPERATURE = NumberLimit("temperature", 0.05, 5.0, default=1.0)
TOP_K = NumberLimit("top_k", 0, 2048, integer=True, default=250)
TOP_P = NumberLimit("top_p", 0.0, 1.0, default=0.0)
CFG = NumberLimit("cfg", 0.0, 20.0, default=3.0)
TEMPO = NumberLimit("tempo", 20, 300, integer=True)
TAKES = NumberLimit("takes", 1, 4, integer=True)
"""Variations of one prompt per request (default ``generation.default_takes``)."""
GENRE = TextLimit("genre", 40)
REASON = TextLimit("reason", 200)
LABEL = TextLimit("label", 40)
"""An API key's label (``/apikey create label:…``)."""
JOB = NumberLimit("job", 1, 2**63 - 1, integer=True)
AMOUNT = NumberLimit("amount", 1, MAX_BALANCE, integer=True)
"""Tokens granted or taken; ``set`` also allows 0 (:data:`BALANCE`)."""
BALANCE = NumberLimit("amount", 0, MAX_BALANCE, integer=True)
FORMAT_CHOICES: tuple[str, ...] = FORMATS

MUSIC_NUMBERS: tuple[NumberLimit, ...] = (SEED, TEMPERATURE, TOP_K, TOP_P, CFG, TEMPO, TAKES)
"""Every numeric ``/music`` option besides duration, in the order frontends show them."""


def duration_range(config: Config, model: str | None = None) -> tuple[float, float]:
    """Seconds allowed for ``model`` (or the longest any model allows, for a schema)."""
    limits = config.limits
    if model is None:
        return limits.min_duration_s, max([limits.max_duration_s,
                                           *limits.model_max_duration_s.values()])
    return limits.min_duration_s, config.max_duration_for(model)


def show(bound: float) -> str:
    """A bound as a member reads it: 1000000000, not 1e+09; 0.05 stays 0.05."""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def summary(config: Config) -> str:
    """One line of every ``/music`` limit, for the help of every frontend."""
    low, high = duration_range(config)
    parts = [f"duration {show(low)}–{show(high)} s", f"prompt ≤ {prompt_chars(config)} characters",
             *(limit.describe() for limit in MUSIC_NUMBERS),
             f"genre ≤ {GENRE.max_chars} characters", f"format {', '.join(FORMAT_CHOICES)}"]
    return "Limits: " + " · ".join(parts)


def prompt_chars(config: Config) -> int:
    """The longest prompt accepted (characters, after collapsing whitespace)."""
    return config.limits.max_prompt_chars


def batch_prompts(config: Config) -> int:
    """The most prompts one batch command may carry (``limits.max_batch_prompts``)."""
    return config.limits.max_batch_prompts
