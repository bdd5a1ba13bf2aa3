"""Plain data of the core: accounts, requests, jobs, ledger entries and job events.

Everything here is an immutable dataclass or an enum, free of I/O, so frontends, the worker
and the store can pass them around without sharing mutable state.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Self, cast

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

DM_COMMUNITY = "@dm"
"""Community value used for direct messages and the console (no guild/team)."""

SHARED_COMMUNITY = "*"
"""Community value used when ``economy.shared_balances`` merges all communities of a platform."""


class _JsonColumn:
    """``to_json``/``from_json`` for a flat dataclass the store keeps in one JSON column."""

    def to_json(self) -> str:
        """The fields as one JSON object (sorted keys, so equal values give equal text)."""
        # A shallow dict: asdict() deep-copies every value, a tenth of a /music's CPU.
        values = {f.name: getattr(self, f.name) for f in fields(cast("DataclassInstance", self))}
        return json.dumps(values, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> Self:
        """The value :meth:`to_json` wrote."""
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class AccountKey:
    """Who a balance belongs to: (platform, community, user)."""

    platform: str
    community: str
    user: str

    def __str__(self) -> str:
        return f"{self.platform}:{self.community}:{self.user}"


@dataclass(frozen=True)
class Actor:
    """Who performs an action, and whether the frontend vouched for admin rights.

    ``is_admin`` is decided by the frontend from platform facts (Manage Server, workspace
    admin, configured roles/ids); the core still checks that an admin acts only inside
    ``community``.
    """

    platform: str
    community: str
    user: str
    is_admin: bool = False
    display_name: str = ""
    operator: bool = False
    """The person running the bot (the ``musicbot admin`` CLI, the local console): may
    manage shared wallets. Chat frontends never set it."""

    @property
    def key(self) -> AccountKey:
        return AccountKey(self.platform, self.community, self.user)


class JobState(enum.StrEnum):
    """Life of a job: queued → running → rendered → done, or → failed | cancelled.

    ``rendered``: the track is on disk and committed; the GPU's part is over and the job waits
    in the delivery outbox. From there it only ever becomes ``done`` — a made track is never
    refunded (see docs/guarantees.md). :data:`TRANSITIONS` is the whole state machine.
    """

    QUEUED = "queued"
    RUNNING = "running"
    RENDERED = "rendered"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)

    @property
    def refundable(self) -> bool:
        """Whether ending the job now gives the tokens back (only before a track exists)."""
        return self in (JobState.QUEUED, JobState.RUNNING)


TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.QUEUED, JobState.RENDERED, JobState.FAILED,
                                 JobState.CANCELLED}),
    JobState.RENDERED: frozenset({JobState.DONE}),
    JobState.DONE: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}
"""Allowed moves. Every move is one conditional UPDATE in :mod:`bot.core.jobs` whose WHERE
names the source state, so two processes racing on a job cannot both move it."""


class JobKind(enum.StrEnum):
    """The kinds of work a job can be; each kind has its own lane on the worker."""

    MUSIC = "music"
    STEMS = "stems"


STEMS_BATCH_PREFIX = "stems:"
"""Batch keys of stems jobs are this plus the separation model (``stems:htdemucs``)."""


class LedgerKind(enum.StrEnum):
    """Why a balance changed."""

    STARTING = "starting"
    ALLOWANCE = "allowance"
    GRANT = "grant"
    TAKE = "take"
    SET = "set"
    CHARGE = "charge"
    REFUND = "refund"


@dataclass(frozen=True)
class GenerationParams(_JsonColumn):
    """What to generate. Validated by :mod:`bot.core.requests` before it reaches a job.

    ``model`` is a catalogue key from the config (``small``, ``medium``, ``debug``…);
    ``seed`` is always set (chosen at random when the member gave none) so any track can
    be re-made with the same seed. ``continue_from`` names a finished job whose audio the
    model continues (the Extend button).
    """

    prompt: str
    duration: float
    model: str
    seed: int
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    cfg_coef: float = 3.0
    genre: str = ""
    tempo: int | None = None
    format: str = "mp3"
    seed_given: bool = False
    continue_from: int | None = None
    audio_prompt: str | None = None
    """A stored clip (``<data_dir>/prompts/<sha256>.wav``) the model continues: the track is
    the clip followed by ``duration`` new seconds (priced for the new seconds only)."""
    melody_prompt: str | None = None
    """A stored clip whose melody (chroma) conditions a ``musicgen-melody`` model."""

    @property
    def text(self) -> str:
        """The text the model is conditioned on: the prompt with genre and tempo folded in."""
        parts = [self.prompt]
        if self.genre:
            parts.append(f"genre: {self.genre}")
        if self.tempo:
            parts.append(f"{self.tempo} bpm")
        return ", ".join(parts)

    @property
    def batch_key(self) -> str:
        """Jobs with equal keys can decode in one batch: the same model. Lengths, sampling
        settings and extensions differ per row (continuous batching, ``generation/batcher``)."""
        return self.model

    def with_seed(self, seed: int) -> GenerationParams:
        return replace(self, seed=seed, seed_given=True)


@dataclass(frozen=True)
class Destination(_JsonColumn):
    """Where and how to deliver a job's result; stored on the job row, not in memory.

    ``interaction_token`` and ``token_expires_at`` (epoch seconds) are set when the platform
    gave a short-lived reply handle (Discord interactions, Slack response_url); after expiry
    the frontend delivers as a normal channel message mentioning ``user``.
    ``status_ref`` is the platform id of the status message to edit with progress.
    """

    platform: str
    community: str
    channel: str
    user: str
    thread: str | None = None
    interaction_token: str | None = None
    token_expires_at: float | None = None
    upload_limit: int = 10 * 1024 * 1024
    status_ref: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Track(_JsonColumn):
    """A finished, encoded track on disk."""

    path: str
    format: str
    duration_s: float
    size_bytes: int
    sample_rate: int
    waveform_path: str | None = None
    noise: bool = False
    """True when made by a random-initialised model (``debug``): the audio is noise."""
    waveform_data_path: str | None = None
    """JSON envelope for players (:func:`generation.audio.waveform_peaks`): ``{"version": 1,
    "sample_rate", "duration_s", "points", "peaks": [[min, max], ...]}``."""
    stems: dict[str, str] | None = None
    """Stems jobs only: stem name (drums, bass, other, vocals) → its encoded file; ``path``
    is then the zip holding all of them (see :mod:`generation.stems`)."""
    tempo_bpm: float | None = None
    """Estimated tempo (librosa's beat tracker, :mod:`generation.analysis`); None if unknown."""
    key: str | None = None
    """Estimated key (``A minor``: chroma against Krumhansl profiles); None if unknown."""
    loudness_lufs: float | None = None
    """BS.1770 integrated loudness of the delivered audio (pyloudnorm); None when the track
    is too short (< 0.4 s) or silent to measure."""


@dataclass(frozen=True)
class Job:
    """One row of the jobs table."""

    id: int
    account: AccountKey
    params: GenerationParams
    state: JobState
    price: int
    idempotency_key: str
    destination: Destination
    attempts: int
    max_attempts: int
    error: str | None
    cancel_requested: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    track_path: str | None
    refunded: int = 0
    owner: str | None = None
    """Process that holds the job now (rendering it, or delivering it), under a lease."""
    lease_expires_at: float | None = None
    crashes: int = 0
    """Process deaths while this job was running; after one it runs alone (poison check)."""
    track: Track | None = None
    """The rendered track (set from ``rendered`` on)."""
    delivery_attempts: int = 0
    delivered_at: float | None = None
    """When the platform accepted the track; None on a ``done`` job means delivery gave up
    (the member can still fetch it with /track)."""
    delivery_error: str | None = None
    share_id: str | None = None
    """Unguessable id of the track's public page ``/t/<share_id>``; None while private."""
    kind: str = "music"
    """What the worker makes: ``music`` (a track from ``params``) or ``stems`` (the four
    Demucs stems of ``source_job_id``'s track; ``params`` is a copy of the source's)."""
    source_job_id: int | None = None
    lane_key: str | None = None
    """The stored batch key of a job that is not music (``stems:htdemucs``)."""
    group_id: int | None = None
    """Jobs asked for together (takes of one prompt, a batch of prompts) share the id of the
    group's first job; they are charged in one transaction and delivered in one message."""
    account_id: int | None = None
    """The member's account row (set on jobs read from the database): refunds credit it
    without looking the member up again."""

    @property
    def batch_key(self) -> str:
        if self.kind != JobKind.MUSIC and self.lane_key:
            return self.lane_key
        return self.params.batch_key


@dataclass(frozen=True)
class LedgerEntry:
    """One append-only line of the ledger."""

    id: int
    account: AccountKey
    delta: int
    balance_after: int
    kind: LedgerKind
    job_id: int | None
    actor: str
    reason: str
    created_at: float


@dataclass(frozen=True)
class Receipt:
    """What ``request_music`` returns: the job, its price, the new balance and queue place."""

    job: Job
    price: int
    balance: int
    position: int
    eta_s: float | None
    duplicate: bool = False
    """True when the idempotency key was seen before: nothing new was charged."""
    group: tuple[Job, ...] = ()
    """Every job of a group request (takes, batch) in order, ``job`` first; ``price`` is
    then the group's total. Empty for a single job."""


@dataclass(frozen=True)
class QueueInfo:
    """Queue numbers for ``/queue``: the member's own jobs and the totals."""

    mine: list[tuple[Job, int]]
    queued_total: int
    running_total: int
    eta_s: float | None


class EventKind(enum.StrEnum):
    """What happened to a job; frontends render these."""

    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REQUEUED = "requeued"
    UNDELIVERED = "undelivered"
    """The track was made but the platform would not take it; no refund, /track gets it."""


@dataclass(frozen=True)
class JobEvent:
    """A change of a job, sent to the frontend that owns ``job.destination.platform``.

    ``progress`` is 0..1 for PROGRESS; ``refunded`` is the number of tokens given back for
    FAILED/CANCELLED; ``message`` is a member-facing reason for FAILED.
    """

    kind: EventKind
    job: Job
    progress: float = 0.0
    eta_s: float | None = None
    refunded: int = 0
    message: str = ""
    track: Track | None = None
    position: int | None = None
    balance: int | None = None


@dataclass(frozen=True)
class MusicRequest:
    """A ``/music`` request as a frontend parsed it: raw, untrusted values.

    Any field may be a string, number or None; :func:`bot.core.requests.validate_request`
    turns it into :class:`GenerationParams` or raises ``InvalidRequest`` naming the field.
    """

    prompt: Any
    duration: Any = None
    model: Any = None
    seed: Any = None
    temperature: Any = None
    top_k: Any = None
    top_p: Any = None
    cfg: Any = None
    genre: Any = None
    tempo: Any = None
    format: Any = None
    takes: Any = None
    """How many takes (variations, consecutive seeds) to render; default from the config."""
    audio: Any = None
    """Path of a clip stored by :func:`bot.media.clips.intake` to continue (never a URL)."""
    melody: Any = None
    """Path of a stored clip whose melody a melody model follows."""
