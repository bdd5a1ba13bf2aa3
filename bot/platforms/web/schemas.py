"""Request and response models of the ``/v1`` API: the OpenAPI document is built from these.

The generate request is built from the core's limits table (:mod:`bot.core.limits`) and the
config, like Discord's option schema: numbers carry the same bounds, so the document shows the
limits and obviously bad values are refused before the core sees them. Texts carry their
length limit in the schema only: the core counts characters after collapsing whitespace, so it
alone decides (a value is accepted here exactly when ``/music`` accepts it; see
tests/api/test_limits_parity.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from bot.config import Config
from bot.core import limits as table
from bot.core.limits import NumberLimit

Status = Literal["pending", "processing", "completed", "failed", "cancelled"]
_STRICT = ConfigDict(strict=True, extra="forbid")


def _number(limit: NumberLimit, low: float | None = None, high: float | None = None,
            **extra: Any) -> Any:
    kind: type = int if limit.integer else float
    default = Field(None, ge=limit.low if low is None else low,
                    le=limit.high if high is None else high, **extra)
    return (kind | None, default)


def generate_request_model(config: Config) -> type[BaseModel]:
    """``POST /v1/music/generate``'s body for this config (durations depend on it)."""
    low, high = table.duration_range(config)
    fields: dict[str, Any] = {
        "prompt": (str, Field(..., description="What the music should sound like",
                              json_schema_extra={"maxLength": table.prompt_chars(config)})),
        "duration": (float, Field(..., ge=low, le=high, description="Seconds of music "
                                  "(a model may allow less: see GET /v1/price)")),
        "genre": (str | None, Field(None, description="Folded into the prompt",
                                    json_schema_extra={"maxLength": table.GENRE.max_chars})),
        "tempo": _number(table.TEMPO, description="Beats per minute"),
        "output_format": (Literal[table.FORMAT_CHOICES] | None,  # type: ignore[valid-type]
                          Field(None, description="Default set by the server")),
        "seed": _number(table.SEED, description="Same seed, same track"),
        "model": (str | None, Field(None, description="A model key of the server's catalogue")),
        "temperature": _number(table.TEMPERATURE),
        "top_k": _number(table.TOP_K),
        "top_p": _number(table.TOP_P),
        "cfg": _number(table.CFG, description="How closely to follow the prompt"),
        "takes": _number(table.TAKES, description=(
            "Variations of the prompt (consecutive seeds after a given one), each a track "
            "charged alone, queued and delivered together; default set by the server")),
        "webhook_url": (str | None, Field(None, max_length=2000, description=(
            "POSTed the track object when the job ends, signed with your key's webhook "
            "secret"))),
    }
    return create_model("GenerateRequest", __config__=_STRICT, **fields)


class ExtendRequest(BaseModel):
    """``POST /v1/music/{id}/extend``: seconds of audio to add (default: the server's)."""

    model_config = _STRICT
    seconds: float | None = Field(None, description="Default limits.extend_seconds")
    webhook_url: str | None = Field(None, max_length=2000)


class TakeRef(BaseModel):
    """One track of a request (with ``takes`` above 1, each take is its own track)."""

    id: int
    status: Status
    url: str


class Accepted(BaseModel):
    """202 answer to generate, reroll and extend. With several takes, ``id``, ``status`` and
    ``url`` are the first take's, ``price`` is the request's total and ``takes`` lists every
    take in order."""

    id: int
    status: Status
    position: int = Field(description="Place in the queue (1 = next); 0 once started")
    price: int
    balance_after: int
    eta_s: float | None
    duplicate: bool = Field(description="True when an Idempotency-Key was seen before: "
                            "nothing new was charged")
    url: str
    takes: list[TakeRef] = Field(description="Every track this request made (one unless "
                                 "takes was above 1), the first being id")


class Sampling(BaseModel):
    temperature: float
    top_k: int
    top_p: float
    cfg: float


class TrackObject(BaseModel):
    """A track as ``GET /v1/music/{id}`` shows it (the hosted APIs' shape plus our extras)."""

    id: int
    status: Status
    prompt: str
    genre: str | None
    tempo: int | None
    duration: float
    output_format: str
    model: str
    seed: int
    sampling: Sampling
    created_at: float
    started_at: float | None
    finished_at: float | None
    progress: float | None = Field(description="0..1 while processing")
    eta_s: float | None
    position: int | None = Field(description="Queue place while pending")
    cost: int
    refunded: int
    error: str | None
    audio_url: str | None
    download_url: str | None
    waveform_url: str | None
    waveform_png_url: str | None
    share_url: str | None = None
    stems: dict[str, str] | None = None
    continue_from: int | None = None


class TrackPage(BaseModel):
    """``GET /v1/music``: my tracks, newest first; pass ``next_cursor`` back as ``cursor``."""

    items: list[TrackObject]
    next_cursor: int | None


class Balance(BaseModel):
    balance: int
    user: str
    community: str


class PriceQuote(BaseModel):
    price: int
    duration: float
    model: str
    output_format: str
    balance: int


class Adjust(BaseModel):
    """``POST /v1/admin/grant|take|set``."""

    model_config = _STRICT
    member: str = Field(description="The member's platform user id")
    amount: int = Field(ge=table.BALANCE.low, le=table.BALANCE.high)
    reason: str = Field("", json_schema_extra={"maxLength": table.REASON.max_chars})


class Adjusted(BaseModel):
    member: str
    balance: int


class LedgerLine(BaseModel):
    id: int
    user: str
    delta: int
    balance_after: int
    kind: str
    job_id: int | None
    actor: str
    reason: str
    created_at: float


class Ledger(BaseModel):
    entries: list[LedgerLine]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error: ``{"error": {"code", "message", "field"?, ...}}``."""

    error: ErrorDetail
