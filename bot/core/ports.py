"""The one interface the core needs from a chat frontend.

Frontends (Discord, Slack, console) implement :class:`Frontend` and register with the
service; the service routes each job's events to the frontend named by
``job.destination.platform``. Nothing here imports a chat library.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable
from typing import Protocol

from bot.core.models import Job, JobEvent, Track


class Frontend(Protocol):
    """A chat platform adapter as seen by the core."""

    platform: str
    """Platform name stored in accounts and destinations: "discord", "slack", "console"."""

    async def notify(self, event: JobEvent) -> None:
        """Show a job change (queued, progress, failed with refund, cancelled...).

        Best effort: exceptions are logged by the caller and never change the job.
        Frontends throttle progress edits to what their platform allows.
        """

    async def deliver(self, job: Job, track: Track) -> None:
        """Upload the finished track to ``job.destination``.

        Must raise :class:`bot.core.errors.DeliveryError` if the member did not get it; the
        delivery stage then retries later or gives up (the member keeps /track; no refund).
        Returning means delivered.
        """


class WorkerPort(Protocol):
    """What the generation worker needs from the core (implemented by
    :class:`bot.core.settlement.Settlement`). Every claimed job leaves through exactly one of
    ``rendered``, ``fail``, ``release`` or ``finish_cancelled``."""

    work_available: asyncio.Event
    """A hint that jobs may be queued; the worker also polls, so a missed hint costs little."""

    async def claim(
        self, max_batch: int, platforms: Collection[str] | None = None, *,
        batch_key: str | None = None, alone: bool = True, exclude: Collection[str] = (),
    ) -> list[Job]:
        """Lease up to ``max_batch`` queued jobs of one batch key (model) to this process;
        ``alone``: the caller runs nothing else of that key (a suspect job may start)."""

    async def has_queued(self, exclude: Collection[str] = (), only: str | None = None) -> bool:
        """Cheap read: is any job queued (of a batch key not in ``exclude``; of ``only``)?"""

    async def report_progress(self, job: Job, fraction: float) -> None: ...

    def cancel_requested(self, job_id: int) -> bool:
        """Whether the job must stop now. Called from the generating thread."""

    def record_speed(self, audio_seconds: float, wall_seconds: float, batch_size: int) -> None: ...

    async def source_track(self, job_id: int) -> str | None:
        """Stored track path of a job (the audio an extension continues)."""

    async def clip_file(self, path: str) -> str | None:
        """A member's stored clip (audio prompt, melody) on this machine, or None if gone."""

    async def rendered(self, job: Job, track: Track) -> Job:
        """The track is on disk: commit it for delivery."""

    async def fail(self, job_id: int, message: str, retryable: bool = False) -> Job: ...

    async def release(self, job_ids: Iterable[int]) -> None:
        """Back to the queue, no attempt spent (shutdown, batch-mates of a cancel)."""

    async def finish_cancelled(self, job_id: int) -> Job: ...
