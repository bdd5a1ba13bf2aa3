"""Typed configuration: YAML file for settings, environment for secrets.

``load_config`` is called once by the CLI; the resulting :class:`Config` is injected into
everything else. The sections are frozen dataclasses whose annotations are the schema:
pydantic validates the YAML against them (types, ranges, cross-field rules), and every
mistake raises :class:`~bot.errors.ConfigError` naming the key, so a typo never silently falls
back to a default. They stay plain dataclasses so ``dataclasses.replace`` builds variants
(tests, benchmarks, ``--model``) without validating half-edited copies.

Secrets (bot tokens, signing secret) are read only from the environment or a git-ignored
``.env`` file, through pydantic-settings, and are never printed (their ``repr`` is masked).
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    AllowInfNan,
    BeforeValidator,
    ConfigDict,
    GetCoreSchemaHandler,
    Strict,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
    with_config,
)
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bot.errors import ConfigError

SECRET_VARIABLES = ("DISCORD_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET")
FORMATS = ("mp3", "wav", "flac", "ogg")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MAX_BALANCE = 1_000_000_000
"""The ledger's balance cap (``bot.core.ledger.MAX_BALANCE``; a test keeps them equal). Copied,
not imported: the config must not import the core. Every token amount must fit under it."""

# A section refuses keys it does not know (a typo must not fall back to a default).
_SECTION = ConfigDict(extra="forbid")


class Secret(str):
    """A string whose repr and str never reveal the value (keeps tokens out of logs)."""

    def __repr__(self) -> str:
        return "Secret('***')"

    def reveal(self) -> str:
        """The value itself, for the one call that sends it to the platform."""
        return str.__str__(self)

    def __str__(self) -> str:
        return "***"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(cls, core_schema.str_schema())


# ----------------------------------------------------------------------- value rules


def _rule(ok: Callable[[Any], bool], reason: str) -> AfterValidator:
    """A check whose failure message is ``reason``, reported under the value's key."""

    def check(value: Any) -> Any:
        if not ok(value):
            raise PydanticCustomError("config_rule", "{reason}", {"reason": reason})
        return value

    return AfterValidator(check)


def _broken(key: str, reason: str) -> PydanticCustomError:
    """A cross-field rule's failure, reported under ``key`` (relative to the section)."""
    return PydanticCustomError("config_rule", "{reason}", {"reason": reason, "field": key})


def _at_least(low: float, reason: str = "") -> AfterValidator:
    return _rule(lambda v: v >= low, reason or f"must be at least {low}")


def _at_most(high: float, reason: str = "") -> AfterValidator:
    return _rule(lambda v: v <= high, reason or f"must be at most {high}")


def _span(low: float, high: float, reason: str = "") -> AfterValidator:
    return _rule(lambda v: low <= v <= high, reason or f"must be {low}..{high}")


def _number_to_text(value: Any) -> Any:
    # Ids written without quotes in YAML (owners: [1234]) arrive as numbers.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _valid_device(device: str) -> bool:
    prefix, _, index = device.partition(":")
    return device in ("auto", "cpu", "cuda") or (prefix == "cuda" and index.isdigit())


# Strict: YAML already gives typed values, so "4" for a number or 1 for true is a mistake.
Int = Annotated[int, Strict()]
Number = Annotated[float, Strict(), AllowInfNan(False)]
Flag = Annotated[bool, Strict()]
Text = Annotated[str, Strict(), BeforeValidator(_number_to_text)]
NotNegative = _at_least(0, "must be 0 or more")
Positive = _rule(lambda v: v > 0, "must be positive")
Tokens = Annotated[Int, NotNegative, _at_most(
    MAX_BALANCE, f"must be at most {MAX_BALANCE} (the largest balance the ledger holds)")]


# ----------------------------------------------------------------------- sections


@with_config(_SECTION)
@dataclass(frozen=True)
class ModelPrice:
    """Tokens for one track: ``max(minimum, ceil(duration * per_second))``, times multipliers."""

    per_second: Annotated[Number, NotNegative] = 2.0
    minimum: Tokens = 10


@with_config(_SECTION)
@dataclass(frozen=True)
class PricingConfig:
    """What tracks cost."""

    default: ModelPrice = field(default_factory=ModelPrice)
    models: dict[Text, ModelPrice] = field(default_factory=dict)
    """Per-model overrides, keyed by catalogue key (``medium``) or full name."""
    lossless_multiplier: Annotated[Number, _at_least(1, "must be 1 or more")] = 1.0
    """Multiplier for wav/flac output (bigger files, same GPU time): 1.0 means no surcharge."""


@with_config(_SECTION)
@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` requests per member per ``window_s`` seconds."""

    count: Annotated[Int, _at_least(1)] = 10
    window_s: Annotated[Number, Positive] = 3600.0


@with_config(_SECTION)
@dataclass(frozen=True)
class LimitsConfig:
    """What one request may ask for and how much the queue holds."""

    max_prompt_chars: Annotated[Int, _span(1, 2000)] = 400
    min_duration_s: Number = 1.0
    max_duration_s: Annotated[Number, _at_most(300)] = 30.0
    """Longest track for any model unless ``model_max_duration_s`` says otherwise (<= 300)."""
    model_max_duration_s: Annotated[dict[Text, Number], _rule(
        lambda d: all(0 < v <= 300 for v in d.values()), "every value must be 1..300",
    )] = field(default_factory=dict)
    max_queued_per_user: Annotated[Int, _at_least(1)] = 3
    max_queue: Annotated[Int, _at_least(1)] = 100
    rate_limit: RateLimit = field(default_factory=RateLimit)
    blocked_words: list[Text] = field(default_factory=list)
    extend_seconds: Number = 10.0
    """Seconds of audio the Extend button adds, on every platform (priced as new audio)."""

    @model_validator(mode="after")
    def _durations_fit(self) -> LimitsConfig:
        if not 0 < self.min_duration_s <= self.max_duration_s:
            raise _broken("min_duration_s", "must be positive and at most limits.max_duration_s")
        if not self.min_duration_s <= self.extend_seconds <= self.max_duration_s:
            raise _broken("extend_seconds",
                          "must be between limits.min_duration_s and limits.max_duration_s")
        return self


@with_config(_SECTION)
@dataclass(frozen=True)
class EconomyConfig:
    """Balances: what members start with and get over time."""

    starting_balance: Tokens = 200
    daily_allowance: Tokens = 0
    """Tokens added per day (lazily, on the next use) up to ``allowance_cap``; 0 disables."""
    allowance_cap: Tokens = 200
    shared_balances: Flag = False
    """One balance per member across all communities of a platform instead of one per community."""
    wallet_admins: Annotated[list[Text], _rule(
        lambda ids: all(":" in who for who in ids),
        'entries must look like "discord:USER_ID" or "slack:U0ABC"',
    )] = field(default_factory=list)
    """With ``shared_balances``: "platform:user" ids (``discord:1234``, ``slack:U0ABC``) who may
    grant/take/set and read other members' shared wallets. Community admins may not: a
    shared wallet spans communities they do not run. The ``musicbot admin`` CLI always may."""


def _default_catalogue() -> dict[str, str]:
    return {
        "small": "facebook/musicgen-small",
        "medium": "facebook/musicgen-medium",
        "large": "facebook/musicgen-large",
        "melody": "facebook/musicgen-melody",
        "stereo-small": "facebook/musicgen-stereo-small",
        "stereo-medium": "facebook/musicgen-stereo-medium",
        "stereo-large": "facebook/musicgen-stereo-large",
        "debug": "debug",
    }


@with_config(_SECTION)
@dataclass(frozen=True)
class ModelsConfig:
    """Which models members may pick and which load at start-up."""

    default: Text = "small"
    catalogue: dict[Text, Text] = field(default_factory=_default_catalogue)
    """Names members may pick -> what the engine loads (hub id, local folder, or ``debug``)."""
    preload: list[Text] = field(default_factory=list)
    """Extra catalogue keys loaded at start-up besides ``default`` (each costs GPU memory)."""

    @model_validator(mode="after")
    def _keys_are_in_the_catalogue(self) -> ModelsConfig:
        if self.default not in self.catalogue:
            raise _broken("default", f"'{self.default}' is not in models.catalogue")
        if not all(key in self.catalogue for key in self.preload):
            raise _broken("preload", "every entry must be a key of models.catalogue")
        return self


@with_config(_SECTION)
@dataclass(frozen=True)
class GenerationConfig:
    """The GPU worker: device, batching, time limits, leases."""

    device: Annotated[Text, _rule(_valid_device, "must be auto, cpu, cuda or cuda:N")] = "auto"
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    max_batch: Annotated[Int, _at_least(1), _at_most(64)] = 4
    """Slots: how many jobs one model decodes together (continuous batching: a finished job's
    slot is taken by the next queued one at the next step)."""
    kv_budget_mib: Annotated[Number, _at_least(0, "must be 0 (automatic) or more")] = 0.0
    """Attention-cache memory the slots may hold together, in MiB; a job waits when its cache
    would not fit. 0 = automatic: half the GPU's free memory at start-up, no cap on CPU."""
    job_timeout_s: Annotated[Number, Positive] = 900.0
    max_attempts: Annotated[Int, _at_least(1)] = 2
    extend_stride_s: Annotated[Number, Positive] = 18.0
    progress_interval_s: Annotated[Number, Positive] = 1.0
    """How often the worker emits progress events; frontends throttle edits further."""
    lease_s: Annotated[Number, _span(3, 3600)] = 30.0
    """A claimed job belongs to its process for this long, renewed every second while the
    process lives; a job whose lease ran out (its process died) goes back to the queue."""
    max_crashes: Annotated[Int, _at_least(1)] = 3
    """A job running at this many process deaths is failed and refunded (a poison job);
    after its first it runs alone, so it cannot take batch-mates down again."""
    poll_s: Annotated[Number, _span(0.05, 10)] = 0.5
    """Longest an idle worker waits before looking at the queue again (wake-ups are also
    immediate when this process queues a job)."""


@with_config(_SECTION)
@dataclass(frozen=True)
class DeliveryConfig:
    """Posting finished tracks to the platforms."""

    retry_delays_s: Annotated[list[Number], _rule(
        lambda waits: all(0 < d <= 86_400 for d in waits),
        "every wait must be above 0 and at most 86400",
    )] = field(default_factory=lambda: [2.0, 10.0, 30.0, 120.0, 600.0])
    """Waits between attempts to post a finished track; after the last, delivery gives up,
    the member is told to use /track, and nothing is refunded (the track exists)."""
    concurrency: Annotated[Int, _span(1, 64)] = 4
    """Tracks uploaded at the same time by one process."""


@with_config(_SECTION)
@dataclass(frozen=True)
class AudioConfig:
    """The files members get."""

    format: Annotated[Text, _rule(lambda f: f in FORMATS,
                                  f"must be one of {', '.join(FORMATS)}")] = "mp3"
    bitrate_kbps: Annotated[Int, _span(32, 320)] = 192
    normalize: Flag = True
    target_lufs: Annotated[Number, _span(-40, 0)] = -14.0
    fade_out_s: Annotated[Number, _span(0, 10)] = 1.0
    waveform: Flag = True
    retention_days: Annotated[Number, NotNegative] = 30.0
    """Finished tracks older than this are deleted from the data folder; 0 keeps them forever."""


@with_config(_SECTION)
@dataclass(frozen=True)
class DiscordConfig:
    """The Discord frontend."""

    enabled: Flag = True
    """Start the Discord frontend when DISCORD_TOKEN is set."""
    admin_role: Text = ""
    """Name of a role whose members may use /tokens (besides Manage Server)."""
    owners: list[Text] = field(default_factory=list)
    """User ids that are admins everywhere the bot is."""
    guild_ids: list[Text] = field(default_factory=list)
    """Guilds to sync commands to instantly; empty means a global sync (can take an hour)."""
    progress_edit_interval_s: Annotated[Number, _at_least(
        1, "must be at least 1 (Discord rate-limits edits)")] = 2.5


@with_config(_SECTION)
@dataclass(frozen=True)
class SlackConfig:
    """The Slack frontend."""

    enabled: Flag = True
    """Start the Slack frontend when its tokens are set."""
    mode: Annotated[Text, _rule(lambda m: m in ("socket", "http"),
                                "must be socket or http")] = "socket"
    """``socket`` (SLACK_APP_TOKEN, no public URL) or ``http`` (SLACK_SIGNING_SECRET)."""
    http_host: Text = "0.0.0.0"
    http_port: Annotated[Int, _span(0, 65535, "must be 0..65535 (0 picks a free port)")] = 3000
    admins: list[Text] = field(default_factory=list)
    """User ids with admin rights besides workspace owners and admins."""
    progress_edit_interval_s: Annotated[Number, _at_least(
        1, "must be at least 1 (Slack rate-limits chat.update)")] = 3.0


@dataclass(frozen=True)
class Secrets:
    """Tokens from the environment; each ``None`` when unset."""

    discord_token: Secret | None = None
    slack_bot_token: Secret | None = None
    slack_app_token: Secret | None = None
    slack_signing_secret: Secret | None = None


@with_config(_SECTION)
@dataclass(frozen=True)
class Config:
    """The whole configuration. Build with :func:`load_config`."""

    database: Text = "musicbot.sqlite3"
    data_dir: Text = "data"
    log_level: Annotated[Text, _rule(lambda level: level.upper() in LOG_LEVELS,
                                     "must be DEBUG, INFO, WARNING or ERROR")] = "INFO"
    models: ModelsConfig = field(default_factory=ModelsConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    economy: EconomyConfig = field(default_factory=EconomyConfig)
    discord: DiscordConfig = field(default_factory=DiscordConfig)
    slack: SlackConfig = field(default_factory=SlackConfig)
    secrets: Secrets = field(default_factory=Secrets, metadata={"env_only": True})
    base_dir: str = field(default=".", metadata={"env_only": True})
    """Folder relative paths are resolved against (the config file's folder)."""

    @model_validator(mode="after")
    def _longest_track_is_payable(self) -> Config:
        longest = max([self.limits.max_duration_s, *self.limits.model_max_duration_s.values()])
        price = self.pricing.default.per_second * longest * self.pricing.lossless_multiplier
        if price > MAX_BALANCE:
            raise _broken("pricing.default.per_second", f"prices the longest track above "
                          f"{MAX_BALANCE} tokens (the ledger's balance cap)")
        return self

    @property
    def database_path(self) -> Path:
        """The SQLite file, resolved next to the config file."""
        return self._resolve(self.database)

    @property
    def data_path(self) -> Path:
        """The tracks folder, resolved next to the config file."""
        return self._resolve(self.data_dir)

    def _resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path

    def model_source(self, key: str) -> str:
        """What the engine loads for catalogue key ``key`` (hub id, folder or ``debug``)."""
        return self.models.catalogue.get(key, key)

    def max_duration_for(self, model: str) -> float:
        """Longest track ``model`` may make."""
        return self.limits.model_max_duration_s.get(model, self.limits.max_duration_s)

    def price_for(self, model: str) -> ModelPrice:
        """The price of ``model`` (by key, then by source), else the default price."""
        prices = self.pricing.models
        return prices.get(model) or prices.get(self.model_source(model)) or self.pricing.default

    def with_model(self, model: str) -> Config:
        """A copy whose default model is ``model`` (a key, hub id or folder), added if new."""
        key = model
        if model not in self.models.catalogue:
            matches = [k for k, v in self.models.catalogue.items() if v == model]
            key = matches[0] if matches else model
        catalogue = dict(self.models.catalogue)
        catalogue.setdefault(key, model)
        models = dataclasses.replace(self.models, default=key, catalogue=catalogue)
        return dataclasses.replace(self, models=models)


ENV_ONLY = frozenset(f.name for f in dataclasses.fields(Config) if f.metadata.get("env_only"))
_SCHEMA: TypeAdapter[Config] = TypeAdapter(Config)


# ----------------------------------------------------------------------- secrets


class _SecretSettings(BaseSettings):
    """The secrets as pydantic-settings reads them: given environment first, then ``.env``."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    discord_token: Secret | None = None
    slack_bot_token: Secret | None = None
    slack_app_token: Secret | None = None
    slack_signing_secret: Secret | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return (value.strip() or None) if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment arrives as init values (load_config's ``environ``, which tests set),
        # so os.environ itself is not read a second time.
        return init_settings, dotenv_settings


def read_secrets(
    environ: Mapping[str, str], dotenv: str | os.PathLike[str] | None = ".env"
) -> Secrets:
    """The four secrets from ``environ``, else from the ``dotenv`` file when it exists."""
    given: dict[str, Any] = {
        name.lower(): environ[name] for name in SECRET_VARIABLES if name in environ}
    # _env_file is a BaseSettings option, not a field; a dict keeps the type checker quiet.
    settings = _SecretSettings(**{"_env_file": dotenv, **given})
    return Secrets(**settings.model_dump())


# ----------------------------------------------------------------------- loading


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    dotenv: str | os.PathLike[str] | None = ".env",
) -> Config:
    """Load and validate the YAML file at ``path`` (defaults only when ``None``).

    Secrets come from ``environ`` (default ``os.environ``) then from ``dotenv`` if present.

    Raises:
        ConfigError: unreadable file, bad YAML, unknown key, wrong type or impossible value.
    """
    raw: dict[str, Any] = {}
    base_dir = "."
    if path is not None:
        raw = _read_yaml(Path(path))
        base_dir = str(Path(path).resolve().parent)
    config = validate(raw)
    secrets = read_secrets(environ if environ is not None else os.environ, dotenv)
    return dataclasses.replace(config, secrets=secrets, base_dir=base_dir)


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(file), f"cannot read the file ({exc.strerror})") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(str(file), f"not valid YAML{where}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(str(file), "the config file must be a mapping of sections "
                          f"(like 'economy:' or 'limits:'), not {_kind(loaded)}")
    return loaded


def validate(raw: Mapping[str, Any]) -> Config:
    """Check ``raw`` (the parsed YAML) against the schema; the first mistake names its key.

    Raises:
        ConfigError: unknown key, wrong type, NaN/inf, out of range or a broken cross-field rule.
    """
    for name in raw:
        if name in ENV_ONLY:
            raise ConfigError(str(name), "secrets are read only from the environment, "
                              "never the file" if name == "secrets" else "unknown setting")
    try:
        return _SCHEMA.validate_python(dict(raw))
    except ValidationError as exc:
        raise _first_error(exc.errors()) from None


def _first_error(errors: Iterable[ErrorDetails]) -> ConfigError:
    # An unknown key is usually a typo that explains the other errors: report it first.
    ordered = sorted(errors, key=lambda e: e["type"] != "unexpected_keyword_argument")
    return _config_error(ordered[0])


def _config_error(error: ErrorDetails) -> ConfigError:
    """One pydantic error as a ConfigError with a key like ``limits.rate_limit.count``."""
    loc, kind, value = error["loc"], error["type"], error["input"]
    key = _dotted(loc)
    context = error.get("ctx") or {}
    if kind == "config_rule":
        where = context.get("field")
        return ConfigError(f"{key}.{where}" if key and where else where or key, context["reason"])
    if kind == "unexpected_keyword_argument":
        if loc[-1] in ("secrets", "discord_token", "token"):
            return ConfigError(key, "secrets are read only from the environment, never the file")
        return ConfigError(key, f"unknown setting (known: {', '.join(_known_settings(loc))})")
    if isinstance(value, float) and not math.isfinite(value):
        return ConfigError(key, f"must be a finite number, got {value}")  # .nan, .inf in YAML
    reason = _TYPE_REASONS.get(kind.split("_")[0])
    return ConfigError(key or "(top level)",
                       reason.format(got=_kind(value)) if reason else error["msg"].lower())


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


def _known_settings(loc: tuple[int | str, ...]) -> list[str]:
    """The settings of the section that holds ``loc`` (for the unknown-key message)."""
    node: Any = Config
    for part in loc[:-1]:
        if dataclasses.is_dataclass(node):
            node = typing.get_type_hints(node)[str(part)]
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
    if not dataclasses.is_dataclass(node):
        return []
    return sorted(f.name for f in dataclasses.fields(node) if f.name not in ENV_ONLY)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {bool: "true/false", int: f"the number {value}", float: f"the number {value}",
            str: f"text {value!r}"[:60], list: "a list", dict: "a mapping"}.get(
                type(value), type(value).__name__)
