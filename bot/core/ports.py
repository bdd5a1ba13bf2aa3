"""The one interface the core needs from a chat frontend.

Frontends (Discord, Slack, console) implement :class:`Frontend` and register with the
service; the service routes each job's events to the frontend named by
``job.destination.platform``. Nothing here imports a chat library.
"""

from __future__ import annotations

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
        core then retries or fails the job and refunds. Returning means delivered.
        """
