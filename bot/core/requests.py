"""Validation of untrusted input at the core's edge, and pricing.

Frontends are not trusted: every value arrives here raw (string, number, None, anything) and
leaves as a checked :class:`GenerationParams`, an ``int`` amount or an ``InvalidRequest``
naming the field and saying why.
"""

from __future__ import annotations

import math
import re
import secrets
import unicodedata
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from bot.config import FORMATS, Config
from bot.core import limits as table
from bot.core.errors import InvalidRequest
from bot.core.limits import NumberLimit
from bot.core.models import GenerationParams, MusicRequest

MAX_SEED = int(table.SEED.high)
MAX_JOB_ID = int(table.JOB.high)
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
_CLIP_NAME = re.compile(r"^[0-9a-f]{64}\.wav$")


def validate_request(config: Config, request: MusicRequest) -> GenerationParams:
    """Turn a raw ``/music`` request into generation parameters, or raise InvalidRequest."""
    model = validate_model(config, request.model)
    prompt = validate_text(config, "prompt", request.prompt, config.limits.max_prompt_chars)
    if not prompt:
        raise InvalidRequest("prompt", "describe the music you want (it is empty)")
    seed_given = request.seed not in (None, "")
    optional(table.TAKES, request.takes)  # refused here like every option; used by takes.py
    params = GenerationParams(
        prompt=prompt,
        duration=validate_duration(config, request.duration, model),
        model=model,
        seed=(limited(table.SEED, request.seed) if seed_given else secrets.randbelow(2**31)),
        seed_given=seed_given,
        temperature=optional(table.TEMPERATURE, request.temperature),
        top_k=optional(table.TOP_K, request.top_k),
        top_p=optional(table.TOP_P, request.top_p),
        cfg_coef=optional(table.CFG, request.cfg),
        genre=(validate_text(config, "genre", request.genre, table.GENRE.max_chars)
               if request.genre else ""),
        tempo=optional(table.TEMPO, request.tempo),
        format=validate_format(request.format, config.audio.format),
    )
    audio, melody = validate_clips(config, request, model)
    return replace(params, audio_prompt=audio, melody_prompt=melody)


def prompts_dir(config: Config) -> Path:
    """Where stored audio prompts live: ``<data_dir>/prompts``."""
    return config.data_path / "prompts"


def supports_melody(config: Config, model: str) -> bool:
    """Whether catalogue key ``model`` is a chroma-conditioned (``musicgen-melody``) model."""
    return "melody" in config.model_source(model)


def validate_clips(
    config: Config, request: MusicRequest, model: str
) -> tuple[str | None, str | None]:
    """``(audio_prompt, melody_prompt)`` for GenerationParams, from stored clip paths.

    Frontends store clips with :func:`bot.media.clips.intake` first; here only a path to such
    a stored file is accepted (never an arbitrary file of the host), and melody only for a
    model with chroma conditioning.
    """
    audio = _stored_clip(config, "audio", request.audio)
    melody = _stored_clip(config, "melody", request.melody)
    if audio and melody:
        raise InvalidRequest("melody", "give either audio (to continue) or melody (to "
                             "follow), not both")
    if melody and not supports_melody(config, model):
        melodic = sorted(k for k in config.models.catalogue if supports_melody(config, k))
        raise InvalidRequest("melody", f"the model '{model}' cannot follow a melody; use "
                             f"{' or '.join(melodic) or 'a melody model'}")
    return audio or None, melody or None


def _stored_clip(config: Config, field: str, value: Any) -> str:
    if value is None or value == "":
        return ""
    folder = prompts_dir(config).resolve()
    path = Path(str(value)).resolve() if isinstance(value, (str, Path)) else None
    if path is None or path.parent != folder or not _CLIP_NAME.match(path.name):
        raise InvalidRequest(field, "attach an audio file (MP3, WAV, OGG, FLAC or M4A)")
    if not path.is_file():
        raise InvalidRequest(field, "the clip is no longer stored; attach it again")
    return str(path)


def validate_duration(config: Config, value: Any, model: str) -> float:
    """Seconds of audio, within limits.min_duration_s and the model's maximum, 0.1 s steps."""
    limit = config.max_duration_for(model)
    if value is None or value == "":
        low = table.show(config.limits.min_duration_s)
        raise InvalidRequest("duration", f"say how many seconds of music you want "
                             f"({low} to {table.show(limit)})")
    seconds = number("duration", value, config.limits.min_duration_s, limit,
                     unit=" seconds")
    return cast(float, round(seconds, 1))


def validate_model(config: Config, value: Any) -> str:
    if value is None or value == "":
        return config.models.default
    if not isinstance(value, str) or value.strip() not in config.models.catalogue:
        names = ", ".join(sorted(config.models.catalogue))
        raise InvalidRequest("model", f"unknown model {str(value)[:40]!r}; choose one of {names}")
    return value.strip()


def validate_format(value: Any, default: str) -> str:
    if value is None or value == "":
        return default
    if not isinstance(value, str) or value.strip().lower() not in FORMATS:
        raise InvalidRequest("format", f"choose one of {', '.join(FORMATS)}")
    return value.strip().lower()


def validate_text(config: Config, field: str, value: Any, max_chars: int) -> str:
    """Trimmed text without control characters, at most ``max_chars``, no blocked words."""
    if not isinstance(value, str):
        raise InvalidRequest(field, f"must be text of at most {max_chars} characters")
    text = " ".join(value.split())  # collapse whitespace, including newlines and tabs
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs") for ch in text):
        raise InvalidRequest(field, "contains control or invisible characters")
    if len(text) > max_chars:
        raise InvalidRequest(field, f"must be at most {max_chars} characters (this is {len(text)})")
    lowered = text.casefold()
    for word in config.limits.blocked_words:
        if re.search(rf"\b{re.escape(word.casefold())}\b", lowered):
            raise InvalidRequest(field, "contains a word that is not allowed here")
    return text


def validate_amount(value: Any, *, allow_zero: bool = False) -> int:
    """A whole number of tokens: 1..MAX_BALANCE (0 allowed for ``set``)."""
    return cast(int, limited(table.BALANCE if allow_zero else table.AMOUNT, value))


def validate_job_id(value: Any) -> int:
    if isinstance(value, str):
        value = value.strip().lstrip("#")
    return cast(int, limited(table.JOB, value))


def limited(limit: NumberLimit, value: Any) -> Any:
    """``value`` checked against one row of the limits table (see :func:`number`)."""
    return number(limit.name, value, limit.low, limit.high, integer=limit.integer)


def optional(limit: NumberLimit, value: Any) -> Any:
    """Like :func:`limited`, but a missing value (None or "") gives the table's default."""
    return limit.default if value is None or value == "" else limited(limit, value)


def validate_user_id(field: str, value: Any) -> str:
    """A platform user id: short, printable, no spaces (Discord snowflake, Slack U123...)."""
    reason = "is not a user id (at most 64 letters, digits or _.:@- characters)"
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise InvalidRequest(field, reason)
    text = str(value).strip()
    if not _ID_PATTERN.match(text):
        raise InvalidRequest(field, reason)
    return text


def number(
    field: str, value: Any, low: float, high: float, *, integer: bool = False, unit: str = ""
) -> Any:
    """Parse ``value`` as a finite number within [low, high]; reject bools, NaN, inf, junk.

    Every refusal names the allowed range, so the member knows what to type instead.
    """
    kind = "a whole number" if integer else "a number"
    allowed = f"{kind} from {table.show(low)} to {table.show(high)}{unit}"
    if isinstance(value, bool) or value is None:
        raise InvalidRequest(field, f"must be {allowed}")
    if isinstance(value, str):
        text = value.strip().lower().removesuffix("s").strip() if unit else value.strip()
        try:
            value = int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
        except ValueError:
            raise InvalidRequest(field, f"{value[:20]!r} is not a number; use {allowed}") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRequest(field, f"must be a finite number; use {allowed}")
    if integer and (isinstance(value, float) and not value.is_integer()):
        raise InvalidRequest(field, f"must be {allowed}")
    if not low <= value <= high:
        between = f"between {table.show(low)} and {table.show(high)}{unit}"
        raise InvalidRequest(field, f"must be {between}")
    return int(value) if integer else float(value)




def price(config: Config, duration: float, model: str, fmt: str = "mp3") -> int:
    """Tokens for a track: ``max(minimum, ceil(duration * per_second))`` × lossless multiplier."""
    rate = config.price_for(model)
    tokens = max(rate.minimum, math.ceil(round(duration * rate.per_second, 6)))
    if fmt in ("wav", "flac"):
        tokens = math.ceil(tokens * config.pricing.lossless_multiplier)
    return int(tokens)
