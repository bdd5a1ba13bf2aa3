"""Typed configuration: YAML file for settings, environment for secrets.

``load_config`` is called once by the CLI; the resulting :class:`Config` is injected into
everything else. The sections are frozen dataclasses whose annotations are the schema:
pydantic validates the YAML against them (types, ranges, cross-field rules), and every
mistake raises :class:`~bot.errors.ConfigError` naming the key, so a typo never silently falls
back to a default. They stay plain dataclasses so ``dataclasses.replace`` builds variants
(tests, benchmarks, ``--model``) without validating half-edited copies.

Secrets (bot tokens, signing secret) are read only from the environment or a git-ignored
``.env`` file, through pydantic-settings, and are never printed (their ``repr`` is masked):
see :mod:`bot.config_secrets`. The value types and rules, and the translation of pydantic's
errors into messages, live in :mod:`bot.config_rules`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError, model_validator, with_config

from bot.config_rules import (
    Flag,
    Int,
    NotNegative,
    Number,
    Positive,
    Text,
    at_least,
    at_most,
    broken,
    first_error,
    kind_of,
    rule,
    span,
)
from bot.config_secrets import SECRET_VARIABLES, Secret, Secrets, read_secrets
from bot.errors import ConfigError

__all__ = [
    "FORMATS", "MAX_BALANCE", "SECRET_VARIABLES", "ApiConfig", "AudioConfig", "Config",
    "ConfigError", "DeliveryConfig", "DiscordConfig", "EconomyConfig", "GenerationConfig",
    "LimitsConfig",
    "ModelPrice", "ModelsConfig", "OpsConfig", "PricingConfig", "RateLimit", "Secret", "Secrets",
    "SlackConfig", "load_config", "read_secrets", "validate",
]

FORMATS = ("mp3", "wav", "flac", "ogg")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MAX_BALANCE = 1_000_000_000
"""The ledger's balance cap (``bot.core.ledger.MAX_BALANCE``; a test keeps them equal). Copied,
not imported: the config must not import the core. Every token amount must fit under it."""

# A section refuses keys it does not know (a typo must not fall back to a default).
_SECTION = ConfigDict(extra="forbid")


def _valid_device(device: str) -> bool:
    prefix, _, index = device.partition(":")
    return device in ("auto", "cpu", "cuda") or (prefix == "cuda" and index.isdigit())


Tokens = Annotated[Int, NotNegative, at_most(
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
    lossless_multiplier: Annotated[Number, at_least(1, "must be 1 or more")] = 1.0
    """Multiplier for wav/flac output (bigger files, same GPU time): 1.0 means no surcharge."""
    stems: ModelPrice = field(default_factory=lambda: ModelPrice(per_second=1.0, minimum=5))
    """Splitting a finished track into stems: per second of the source track, with a minimum."""


@with_config(_SECTION)
@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` requests per member per ``window_s`` seconds."""

    count: Annotated[Int, at_least(1)] = 10
    window_s: Annotated[Number, Positive] = 3600.0


@with_config(_SECTION)
@dataclass(frozen=True)
class LimitsConfig:
    """What one request may ask for and how much the queue holds."""

    max_prompt_chars: Annotated[Int, span(1, 2000)] = 400
    min_duration_s: Number = 1.0
    max_duration_s: Annotated[Number, at_most(300)] = 30.0
    """Longest track for any model unless ``model_max_duration_s`` says otherwise (<= 300)."""
    model_max_duration_s: Annotated[dict[Text, Number], rule(
        lambda d: all(0 < v <= 300 for v in d.values()), "every value must be 1..300",
    )] = field(default_factory=dict)
    max_queued_per_user: Annotated[Int, at_least(1)] = 3
    max_queue: Annotated[Int, at_least(1)] = 100
    rate_limit: RateLimit = field(default_factory=RateLimit)
    blocked_words: list[Text] = field(default_factory=list)
    extend_seconds: Number = 10.0
    """Seconds of audio the Extend button adds, on every platform (priced as new audio)."""
    max_batch_prompts: Annotated[Int, span(1, 20)] = 5
    """Prompts one batch command (Slack ``/music batch``, Discord ``/batch``) may carry."""
    max_clip_bytes: Annotated[Int, at_least(1024)] = 10 * 1024 * 1024
    """Largest audio prompt file (``/music audio:`` / ``melody:``), checked before download."""
    max_clip_s: Annotated[Number, Positive] = 30.0
    """Longest audio prompt in seconds (continuation uses its last 10 s as context)."""
    min_clip_s: Annotated[Number, Positive] = 0.5
    """Shortest audio prompt in seconds."""

    @model_validator(mode="after")
    def _durations_fit(self) -> LimitsConfig:
        if not 0 < self.min_duration_s <= self.max_duration_s:
            raise broken("min_duration_s", "must be positive and at most limits.max_duration_s")
        if not self.min_duration_s <= self.extend_seconds <= self.max_duration_s:
            raise broken("extend_seconds",
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
    wallet_admins: Annotated[list[Text], rule(
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
        "debug-melody": "debug-melody",
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
    stems: Text = "htdemucs"
    """Demucs model that splits tracks into stems (a ``demucs.pretrained`` name), ``debug``
    (random-initialised HTDemucs built in-process: output is noise), or ``""`` (no stems)."""

    @model_validator(mode="after")
    def _keys_are_in_the_catalogue(self) -> ModelsConfig:
        if self.default not in self.catalogue:
            raise broken("default", f"'{self.default}' is not in models.catalogue")
        if not all(key in self.catalogue for key in self.preload):
            raise broken("preload", "every entry must be a key of models.catalogue")
        return self


@with_config(_SECTION)
@dataclass(frozen=True)
class GenerationConfig:
    """The GPU worker: device, batching, time limits, leases."""

    device: Annotated[Text, rule(_valid_device, "must be auto, cpu, cuda or cuda:N")] = "auto"
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    max_batch: Annotated[Int, at_least(1), at_most(64)] = 4
    """Slots: how many jobs one model decodes together (continuous batching: a finished job's
    slot is taken by the next queued one at the next step)."""
    kv_budget_mib: Annotated[Number, at_least(0, "must be 0 (automatic) or more")] = 0.0
    """Attention-cache memory the slots may hold together, in MiB; a job waits when its cache
    would not fit. 0 = automatic: half the GPU's free memory at start-up, no cap on CPU."""
    job_timeout_s: Annotated[Number, Positive] = 900.0
    max_attempts: Annotated[Int, at_least(1)] = 2
    extend_stride_s: Annotated[Number, Positive] = 18.0
    progress_interval_s: Annotated[Number, Positive] = 1.0
    """How often the worker emits progress events; frontends throttle edits further."""
    lease_s: Annotated[Number, span(3, 3600)] = 30.0
    """A claimed job belongs to its process for this long, renewed every second while the
    process lives; a job whose lease ran out (its process died) goes back to the queue."""
    max_crashes: Annotated[Int, at_least(1)] = 3
    """A job running at this many process deaths is failed and refunded (a poison job);
    after its first it runs alone, so it cannot take batch-mates down again."""
    poll_s: Annotated[Number, span(0.05, 10)] = 0.5
    """Longest an idle worker waits before looking at the queue again (wake-ups are also
    immediate when this process queues a job)."""
    default_takes: Annotated[Int, span(1, 4)] = 1
    """Takes (variations with seeds seed, seed+1, …) a request renders when ``takes`` is
    left out; at most :data:`bot.core.limits.TAKES` ``high``."""
    finish_threads: Annotated[Int, span(0, 32, "must be 0 (automatic) to 32")] = 0
    """Threads that finish rendered tracks (loudness, analysis, encoding, waveforms). 0 =
    automatic: one per two CPU cores, at most 4. A whole batch ends at once; finishing it on
    as many threads as the default pool has took the GIL from the event loop for 100-300 ms
    on a 2-core box (docs/performance.md)."""


@with_config(_SECTION)
@dataclass(frozen=True)
class DeliveryConfig:
    """Posting finished tracks to the platforms."""

    retry_delays_s: Annotated[list[Number], rule(
        lambda waits: all(0 < d <= 86_400 for d in waits),
        "every wait must be above 0 and at most 86400",
    )] = field(default_factory=lambda: [2.0, 10.0, 30.0, 120.0, 600.0])
    """Waits between attempts to post a finished track; after the last, delivery gives up,
    the member is told to use /track, and nothing is refunded (the track exists)."""
    concurrency: Annotated[Int, span(1, 64)] = 4
    """Tracks uploaded at the same time by one process."""


@with_config(_SECTION)
@dataclass(frozen=True)
class AudioConfig:
    """The files members get."""

    format: Annotated[Text, rule(lambda f: f in FORMATS,
                                  f"must be one of {', '.join(FORMATS)}")] = "mp3"
    bitrate_kbps: Annotated[Int, span(32, 320)] = 192
    normalize: Flag = True
    target_lufs: Annotated[Number, span(-40, 0)] = -14.0
    fade_out_s: Annotated[Number, span(0, 10)] = 1.0
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
    progress_edit_interval_s: Annotated[Number, at_least(
        1, "must be at least 1 (Discord rate-limits edits)")] = 2.5


@with_config(_SECTION)
@dataclass(frozen=True)
class SlackConfig:
    """The Slack frontend."""

    # Shaped like DiscordConfig on purpose (each platform's own switches and limits);
    # `duplicates` lists the pair by shape only.

    enabled: Flag = True
    """Start the Slack frontend when its tokens are set."""
    mode: Annotated[Text, rule(lambda m: m in ("socket", "http"),
                                "must be socket or http")] = "socket"
    """``socket`` (SLACK_APP_TOKEN, no public URL) or ``http`` (SLACK_SIGNING_SECRET)."""
    http_host: Text = "0.0.0.0"
    http_port: Annotated[Int, span(0, 65535, "must be 0..65535 (0 picks a free port)")] = 3000
    admins: list[Text] = field(default_factory=list)
    """User ids with admin rights besides workspace owners and admins."""
    progress_edit_interval_s: Annotated[Number, at_least(
        1, "must be at least 1 (Slack rate-limits chat.update)")] = 3.0


@with_config(_SECTION)
@dataclass(frozen=True)
class OpsConfig:
    """The operator's HTTP endpoint: ``/healthz`` and Prometheus ``/metrics``."""

    http_host: Text = "127.0.0.1"
    """Address to listen on; loopback keeps it off the network (it needs no password)."""
    http_port: Annotated[Int, span(0, 65535, "must be 0..65535 (0 turns it off)")] = 0
    """0 (the default) serves nothing: several musicbot processes may share a host
    (``run``, ``console``, ``generate``, workers), and only the one you monitor should
    listen. 9108 is the usual choice for ``musicbot run``."""
    event_loop: Annotated[Text, rule(lambda k: k in ("auto", "uvloop", "asyncio"),
                                      "must be auto, uvloop or asyncio")] = "auto"
    """The event loop every process runs on: ``auto`` takes uvloop when it is installed (it
    is, with the project's dependencies: about half the CPU per API request and chat event
    of the standard loop), ``asyncio`` the standard library's."""


@with_config(_SECTION)
@dataclass(frozen=True)
class ApiConfig:
    """The HTTP API (``/v1``) and the shared track pages (``/t/{share_id}``)."""

    enabled: Flag = False
    host: Text = "127.0.0.1"
    """Address to listen on. Put a TLS-terminating reverse proxy in front for the internet."""
    port: Annotated[Int, span(0, 65535, "must be 0..65535 (0 picks a free port)")] = 8080
    public_base_url: Text = ""
    """How members reach the server (``https://music.example.org``): the base of
    ``audio_url``, ``download_url`` and track-page links in chat. Empty: links use the request's
    own host, and chat messages carry no page link."""
    share_by_default: Flag = False
    """Give every new track a public page (``/t/<share_id>``) when it renders; members can
    still ``/unshare`` it. Off: a track is public only after its owner's ``/share``."""
    share_by_default_in: dict[Text, Flag] = field(default_factory=dict)
    """Per-community overrides of ``share_by_default``, keyed ``"<platform>:<community id>"``
    (``"discord:<guild id>": true``, ``"slack:<team id>": false``)."""
    webhooks_allow_private: Flag = False
    """Let completion webhooks reach loopback, private, link-local and reserved addresses
    (a LAN-only setup). Off: such URLs are refused, also when DNS changes after the check."""
    webhook_timeout_s: Annotated[Number, span(1, 60)] = 10.0
    """How long one webhook POST may take before it counts as failed (then retried)."""


@with_config(_SECTION)
@dataclass(frozen=True)
class StorageConfig:
    """Where finished tracks live, so that every process (on any machine) can reach them."""

    kind: Annotated[Text, rule(lambda k: k in ("directory", "s3"),
                                "must be directory or s3")] = "directory"
    """``directory``: a folder (a shared volume when workers run on other machines);
    ``s3``: an S3-compatible bucket, credentials from AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY in the environment."""
    path: Text = ""
    """The tracks folder (``directory``), or the local cache of an ``s3`` store; empty means
    ``<data_dir>/tracks``."""
    bucket: Text = ""
    endpoint_url: Text = ""
    """An S3-compatible server (MinIO, moto, R2...); empty means AWS itself."""
    region: Text = ""
    prefix: Text = "tracks/"
    """Key prefix of the track objects in the bucket."""

    @model_validator(mode="after")
    def _bucket_for_s3(self) -> StorageConfig:
        if self.kind == "s3" and not self.bucket:
            raise broken("bucket", "must be set when storage.kind is s3")
        return self


@with_config(_SECTION)
@dataclass(frozen=True)
class Config:
    """The whole configuration. Build with :func:`load_config`."""

    database: Text = "musicbot.sqlite3"
    data_dir: Text = "data"
    log_level: Annotated[Text, rule(lambda level: level.upper() in LOG_LEVELS,
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
    ops: OpsConfig = field(default_factory=OpsConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    secrets: Secrets = field(default_factory=Secrets, metadata={"env_only": True})
    base_dir: str = field(default=".", metadata={"env_only": True})
    """Folder relative paths are resolved against (the config file's folder)."""

    @model_validator(mode="after")
    def _longest_track_is_payable(self) -> Config:
        longest = max([self.limits.max_duration_s, *self.limits.model_max_duration_s.values()])
        price = self.pricing.default.per_second * longest * self.pricing.lossless_multiplier
        if price > MAX_BALANCE:
            raise broken("pricing.default.per_second", f"prices the longest track above "
                          f"{MAX_BALANCE} tokens (the ledger's balance cap)")
        return self

    @property
    def database_path(self) -> Path | str:
        """The SQLite file, resolved next to the config file; or a ``postgresql://`` URL.

        ``MUSICBOT_DATABASE_URL`` in the environment overrides the setting (how a container
        is pointed at its server). The password comes only from the environment (that URL,
        or ``PGPASSWORD``): a password written in the config file is refused.
        """
        url = os.environ.get("MUSICBOT_DATABASE_URL", "").strip()
        if url:
            return url
        if self.database.startswith(("postgresql://", "postgres://")):
            if "@" in self.database and ":" in self.database.split("://", 1)[1].split("@")[0]:
                raise ConfigError("database", "a password in the config file: put it in "
                                  "PGPASSWORD or MUSICBOT_DATABASE_URL in the environment")
            return self.database
        return self._resolve(self.database)

    @property
    def data_path(self) -> Path:
        """The tracks folder, resolved next to the config file."""
        return self._resolve(self.data_dir)

    @property
    def tracks_path(self) -> Path:
        """The local tracks folder: ``storage.path``, else ``<data_dir>/tracks``."""
        return self._resolve(self.storage.path) if self.storage.path else self.data_path / "tracks"

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
                          f"(like 'economy:' or 'limits:'), not {kind_of(loaded)}")
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
        raise first_error(exc.errors(), Config) from None
