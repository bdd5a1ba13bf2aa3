"""Typed configuration: YAML file for settings, environment for secrets.

``load_config`` is called once by the CLI; the resulting :class:`Config` is injected into
everything else. Unknown keys, wrong types and impossible values raise
:class:`~bot.core.errors.ConfigError` naming the key, so a typo never silently falls back to
a default. Secrets (bot tokens, signing secret) are read only from the environment or a
git-ignored ``.env`` file and are never printed (their ``repr`` is masked).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.core.errors import ConfigError

SECRET_VARIABLES = ("DISCORD_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET")
FORMATS = ("mp3", "wav", "flac", "ogg")


class Secret(str):
    """A string whose repr and str never reveal the value (keeps tokens out of logs)."""

    def __repr__(self) -> str:
        return "Secret('***')"

    def reveal(self) -> str:
        return str.__str__(self)

    def __str__(self) -> str:
        return "***"


@dataclass(frozen=True)
class ModelPrice:
    """Tokens for one track: ``max(minimum, ceil(duration * per_second))``, times multipliers."""

    per_second: float = 2.0
    minimum: int = 10


@dataclass(frozen=True)
class PricingConfig:
    default: ModelPrice = field(default_factory=ModelPrice)
    models: dict[str, ModelPrice] = field(default_factory=dict)
    """Per-model overrides, keyed by catalogue key (``medium``) or full name."""
    lossless_multiplier: float = 1.0
    """Multiplier for wav/flac output (bigger files, same GPU time): 1.0 means no surcharge."""


@dataclass(frozen=True)
class RateLimit:
    count: int = 10
    window_s: float = 3600.0


@dataclass(frozen=True)
class LimitsConfig:
    max_prompt_chars: int = 400
    min_duration_s: float = 1.0
    max_duration_s: float = 30.0
    """Longest track for any model unless ``model_max_duration_s`` says otherwise (<= 300)."""
    model_max_duration_s: dict[str, float] = field(default_factory=dict)
    max_queued_per_user: int = 3
    max_queue: int = 100
    rate_limit: RateLimit = field(default_factory=RateLimit)
    blocked_words: list[str] = field(default_factory=list)
    extend_seconds: float = 10.0
    """Seconds of audio the Extend button adds, on every platform (priced as new audio)."""


@dataclass(frozen=True)
class EconomyConfig:
    starting_balance: int = 200
    daily_allowance: int = 0
    """Tokens added per day (lazily, on the next use) up to ``allowance_cap``; 0 disables."""
    allowance_cap: int = 200
    shared_balances: bool = False
    """One balance per member across all communities of a platform instead of one per community."""
    wallet_admins: list[str] = field(default_factory=list)
    """With ``shared_balances``: "platform:user" ids (``discord:1234``, ``slack:U0ABC``) who may
    grant/take/set and read other members' shared wallets. Community admins may not: a
    shared wallet spans communities they do not run. The ``musicbot admin`` CLI always may."""


@dataclass(frozen=True)
class ModelsConfig:
    default: str = "small"
    catalogue: dict[str, str] = field(
        default_factory=lambda: {
            "small": "facebook/musicgen-small",
            "medium": "facebook/musicgen-medium",
            "large": "facebook/musicgen-large",
            "melody": "facebook/musicgen-melody",
            "stereo-small": "facebook/musicgen-stereo-small",
            "stereo-medium": "facebook/musicgen-stereo-medium",
            "stereo-large": "facebook/musicgen-stereo-large",
            "debug": "debug",
        }
    )
    """Names members may pick -> what the engine loads (hub id, local folder, or ``debug``)."""
    preload: list[str] = field(default_factory=list)
    """Extra catalogue keys loaded at start-up besides ``default`` (each costs GPU memory)."""


@dataclass(frozen=True)
class GenerationConfig:
    device: str = "auto"
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    max_batch: int = 4
    """Slots: how many jobs one model decodes together (continuous batching: a finished job's
    slot is taken by the next queued one at the next step)."""
    kv_budget_mib: float = 0.0
    """Attention-cache memory the slots may hold together, in MiB; a job waits when its cache
    would not fit. 0 = automatic: half the GPU's free memory at start-up, no cap on CPU."""
    job_timeout_s: float = 900.0
    max_attempts: int = 2
    extend_stride_s: float = 18.0
    progress_interval_s: float = 1.0
    """How often the worker emits progress events; frontends throttle edits further."""
    lease_s: float = 30.0
    """A claimed job belongs to its process for this long, renewed every second while the
    process lives; a job whose lease ran out (its process died) goes back to the queue."""
    max_crashes: int = 3
    """A job running at this many process deaths is failed and refunded (a poison job);
    after its first it runs alone, so it cannot take batch-mates down again."""
    poll_s: float = 0.5
    """Longest an idle worker waits before looking at the queue again (wake-ups are also
    immediate when this process queues a job)."""


@dataclass(frozen=True)
class DeliveryConfig:
    retry_delays_s: list[float] = field(default_factory=lambda: [2.0, 10.0, 30.0, 120.0, 600.0])
    """Waits between attempts to post a finished track; after the last, delivery gives up,
    the member is told to use /track, and nothing is refunded (the track exists)."""
    concurrency: int = 4
    """Tracks uploaded at the same time by one process."""


@dataclass(frozen=True)
class AudioConfig:
    format: str = "mp3"
    bitrate_kbps: int = 192
    normalize: bool = True
    target_lufs: float = -14.0
    fade_out_s: float = 1.0
    waveform: bool = True
    retention_days: float = 30.0
    """Finished tracks older than this are deleted from the data folder; 0 keeps them forever."""


@dataclass(frozen=True)
class DiscordConfig:
    enabled: bool = True
    """Start the Discord frontend when DISCORD_TOKEN is set."""
    admin_role: str = ""
    """Name of a role whose members may use /tokens (besides Manage Server)."""
    owners: list[str] = field(default_factory=list)
    """User ids that are admins everywhere the bot is."""
    guild_ids: list[str] = field(default_factory=list)
    """Guilds to sync commands to instantly; empty means a global sync (can take an hour)."""
    progress_edit_interval_s: float = 2.5


@dataclass(frozen=True)
class SlackConfig:
    enabled: bool = True
    """Start the Slack frontend when its tokens are set."""
    mode: str = "socket"
    """``socket`` (SLACK_APP_TOKEN, no public URL) or ``http`` (SLACK_SIGNING_SECRET)."""
    http_host: str = "0.0.0.0"
    http_port: int = 3000
    admins: list[str] = field(default_factory=list)
    """User ids with admin rights besides workspace owners and admins."""
    progress_edit_interval_s: float = 3.0


@dataclass(frozen=True)
class Secrets:
    discord_token: Secret | None = None
    slack_bot_token: Secret | None = None
    slack_app_token: Secret | None = None
    slack_signing_secret: Secret | None = None


@dataclass(frozen=True)
class Config:
    """The whole configuration. Build with :func:`load_config`."""

    database: str = "musicbot.sqlite3"
    data_dir: str = "data"
    log_level: str = "INFO"
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

    @property
    def database_path(self) -> Path:
        return self._resolve(self.database)

    @property
    def data_path(self) -> Path:
        return self._resolve(self.data_dir)

    def _resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path

    def model_source(self, key: str) -> str:
        """What the engine loads for catalogue key ``key`` (hub id, folder or ``debug``)."""
        return self.models.catalogue.get(key, key)

    def max_duration_for(self, model: str) -> float:
        return self.limits.model_max_duration_s.get(model, self.limits.max_duration_s)

    def price_for(self, model: str) -> ModelPrice:
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


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: typing.Mapping[str, str] | None = None,
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
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(str(path), f"cannot read the file ({exc.strerror})") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise ConfigError(str(path), f"not valid YAML{where}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(str(path), "the config file must be a mapping of sections "
                              f"(like 'economy:' or 'limits:'), not {_kind(loaded)}")
        raw = loaded
        base_dir = str(file.resolve().parent)
    config = _build(Config, raw, "")
    secrets = _read_secrets(environ if environ is not None else os.environ, dotenv)
    config = dataclasses.replace(config, secrets=secrets, base_dir=base_dir)
    validate(config)
    return config


def _read_secrets(
    environ: typing.Mapping[str, str], dotenv: str | os.PathLike[str] | None
) -> Secrets:
    values = dict(_parse_dotenv(Path(dotenv))) if dotenv and Path(dotenv).is_file() else {}
    values.update({k: v for k, v in environ.items() if k in SECRET_VARIABLES})

    def get(name: str) -> Secret | None:
        value = values.get(name, "").strip()
        return Secret(value) if value else None

    return Secrets(
        discord_token=get("DISCORD_TOKEN"),
        slack_bot_token=get("SLACK_BOT_TOKEN"),
        slack_app_token=get("SLACK_APP_TOKEN"),
        slack_signing_secret=get("SLACK_SIGNING_SECRET"),
    )


def _parse_dotenv(path: Path) -> typing.Iterator[tuple[str, str]]:
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        if key in SECRET_VARIABLES:
            yield key, value.strip().strip("'\"")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Recursively turn a mapping into dataclass ``cls``, checking keys and types."""
    if not isinstance(raw, dict):
        raise ConfigError(prefix.rstrip(".") or "(top level)", "expected a mapping of settings")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("env_only")}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{prefix}{unknown[0]}"
        if unknown[0] in ("secrets", "discord_token", "token"):
            raise ConfigError(key, "secrets are read only from the environment, never the file")
        raise ConfigError(key, f"unknown setting (known: {', '.join(sorted(fields))})")
    values = {name: _convert(hints[name], raw[name], f"{prefix}{name}") for name in raw}
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{key}.")
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(options[0], value, key)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {_kind(value)}")
        return [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _key_type, item = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {_kind(value)}")
        return {str(k): _convert(item, v, f"{key}.{k}") for k, v in value.items()}
    return _scalar(hint, value, key)


def _scalar(hint: Any, value: Any, key: str) -> Any:
    if hint in (int, float) and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number, got {value}")  # .nan, .inf in YAML
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true or false, got {_kind(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected a whole number, got {_kind(value)}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise ConfigError(key, f"expected a number, got {_kind(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # ids written without quotes in YAML
        raise ConfigError(key, f"expected text, got {_kind(value)}")
    raise ConfigError(key, f"unsupported setting type {hint!r}")  # pragma: no cover


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {bool: "true/false", int: f"the number {value}", float: f"the number {value}",
            str: f"text {value!r}"[:60], list: "a list", dict: "a mapping"}.get(
                type(value), type(value).__name__)


def validate(config: Config) -> None:
    """Check values that are well-typed but impossible. Raises ConfigError naming the key."""
    checks: list[tuple[bool, str, str]] = [
        (config.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"), "log_level",
         "must be DEBUG, INFO, WARNING or ERROR"),
        (config.models.default in config.models.catalogue, "models.default",
         f"'{config.models.default}' is not in models.catalogue"),
        (all(k in config.models.catalogue for k in config.models.preload), "models.preload",
         "every entry must be a key of models.catalogue"),
        (config.generation.max_batch >= 1, "generation.max_batch", "must be at least 1"),
        (config.generation.max_batch <= 64, "generation.max_batch", "must be at most 64"),
        (config.generation.job_timeout_s > 0, "generation.job_timeout_s", "must be positive"),
        (config.generation.max_attempts >= 1, "generation.max_attempts", "must be at least 1"),
        (config.generation.extend_stride_s > 0, "generation.extend_stride_s", "must be positive"),
        (config.generation.progress_interval_s > 0, "generation.progress_interval_s",
         "must be positive"),
        (_valid_device(config.generation.device), "generation.device",
         "must be auto, cpu, cuda or cuda:N"),
        (config.generation.kv_budget_mib >= 0, "generation.kv_budget_mib",
         "must be 0 (automatic) or more"),
        (3 <= config.generation.lease_s <= 3600, "generation.lease_s", "must be 3..3600"),
        (config.generation.max_crashes >= 1, "generation.max_crashes", "must be at least 1"),
        (0.05 <= config.generation.poll_s <= 10, "generation.poll_s", "must be 0.05..10"),
        (all(0 < d <= 86_400 for d in config.delivery.retry_delays_s),
         "delivery.retry_delays_s", "every wait must be above 0 and at most 86400"),
        (1 <= config.delivery.concurrency <= 64, "delivery.concurrency", "must be 1..64"),
        (all(":" in who for who in config.economy.wallet_admins), "economy.wallet_admins",
         'entries must look like "discord:USER_ID" or "slack:U0ABC"'),
        (config.audio.format in FORMATS, "audio.format", f"must be one of {', '.join(FORMATS)}"),
        (32 <= config.audio.bitrate_kbps <= 320, "audio.bitrate_kbps", "must be 32..320"),
        (-40 <= config.audio.target_lufs <= 0, "audio.target_lufs", "must be -40..0"),
        (0 <= config.audio.fade_out_s <= 10, "audio.fade_out_s", "must be 0..10"),
        (config.audio.retention_days >= 0, "audio.retention_days", "must be 0 or more"),
        (config.pricing.default.per_second >= 0, "pricing.default.per_second", "must be 0 or more"),
        (config.pricing.default.minimum >= 0, "pricing.default.minimum", "must be 0 or more"),
        (config.pricing.lossless_multiplier >= 1, "pricing.lossless_multiplier",
         "must be 1 or more"),
        (all(p.per_second >= 0 and p.minimum >= 0 for p in config.pricing.models.values()),
         "pricing.models", "prices must be 0 or more"),
        (0 < config.limits.max_prompt_chars <= 2000, "limits.max_prompt_chars", "must be 1..2000"),
        (0 < config.limits.min_duration_s <= config.limits.max_duration_s,
         "limits.min_duration_s", "must be positive and at most limits.max_duration_s"),
        (config.limits.max_duration_s <= 300, "limits.max_duration_s", "must be at most 300"),
        (all(0 < v <= 300 for v in config.limits.model_max_duration_s.values()),
         "limits.model_max_duration_s", "every value must be 1..300"),
        (config.limits.max_queued_per_user >= 1, "limits.max_queued_per_user",
         "must be at least 1"),
        (config.limits.max_queue >= 1, "limits.max_queue", "must be at least 1"),
        (config.limits.rate_limit.count >= 1, "limits.rate_limit.count", "must be at least 1"),
        (config.limits.rate_limit.window_s > 0, "limits.rate_limit.window_s", "must be positive"),
        (config.economy.starting_balance >= 0, "economy.starting_balance", "must be 0 or more"),
        (config.economy.daily_allowance >= 0, "economy.daily_allowance", "must be 0 or more"),
        (config.economy.allowance_cap >= 0, "economy.allowance_cap", "must be 0 or more"),
        (config.slack.mode in ("socket", "http"), "slack.mode", "must be socket or http"),
        (0 <= config.slack.http_port < 65536, "slack.http_port",
         "must be 0..65535 (0 picks a free port)"),
        (config.discord.progress_edit_interval_s >= 1, "discord.progress_edit_interval_s",
         "must be at least 1 (Discord rate-limits edits)"),
        (config.slack.progress_edit_interval_s >= 1, "slack.progress_edit_interval_s",
         "must be at least 1 (Slack rate-limits chat.update)"),
    ]
    checks += _token_checks(config)
    for ok, key, reason in checks:
        if not ok:
            raise ConfigError(key, reason)


def _token_checks(config: Config) -> list[tuple[bool, str, str]]:
    """Every token amount must fit the ledger's balance cap, or it could never be paid."""
    from bot.core.ledger import MAX_BALANCE  # late: the core imports this module

    cap = f"must be at most {MAX_BALANCE} (the largest balance the ledger holds)"
    economy, limits = config.economy, config.limits
    amounts = [
        (economy.starting_balance, "economy.starting_balance"),
        (economy.daily_allowance, "economy.daily_allowance"),
        (economy.allowance_cap, "economy.allowance_cap"),
        (config.pricing.default.minimum, "pricing.default.minimum"),
        *((p.minimum, f"pricing.models.{name}.minimum")
          for name, p in config.pricing.models.items()),
    ]
    checks = [(amount <= MAX_BALANCE, key, cap) for amount, key in amounts]
    longest = max([limits.max_duration_s, *limits.model_max_duration_s.values()])
    checks.append((
        config.pricing.default.per_second * longest * config.pricing.lossless_multiplier
        <= MAX_BALANCE, "pricing.default.per_second",
        f"prices the longest track above {MAX_BALANCE} tokens (the ledger's balance cap)"))
    checks.append((
        limits.min_duration_s <= limits.extend_seconds <= limits.max_duration_s,
        "limits.extend_seconds", "must be between limits.min_duration_s and "
        "limits.max_duration_s"))
    return checks


def _valid_device(device: str) -> bool:
    if device in ("auto", "cpu", "cuda"):
        return True
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()
