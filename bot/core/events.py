"""Job events to the frontend that owns each job: in order per job, never blocking the caller.

Every part of the core that changes a job (member use cases, settlement, recovery, delivery)
emits through one :class:`Notifier`, so a job's "queued → started → progress → done" edits
reach the platform in that order even though they come from different tasks.
"""

from __future__ import annotations

import asyncio
import logging

from bot.core.models import JobEvent
from bot.core.ports import Frontend

log = logging.getLogger(__name__)

NOTIFY_TIMEOUT_S = 60.0


class Notifier:
    """Routes :class:`JobEvent` to the frontend registered for ``job.destination.platform``."""

    def __init__(self) -> None:
        self.frontends: dict[str, Frontend] = {}
        self._chains: dict[int, asyncio.Task[None]] = {}

    def register(self, frontend: Frontend) -> None:
        self.frontends[frontend.platform] = frontend

    def emit(self, event: JobEvent) -> None:
        """Queue ``event`` after the job's previous one; returns at once."""
        frontend = self.frontends.get(event.job.destination.platform)
        if frontend is None:
            return
        job_id = event.job.id
        previous = self._chains.get(job_id)
        task = asyncio.get_running_loop().create_task(_notify(frontend, event, previous))
        self._chains[job_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._chains.get(job_id) is done:
                del self._chains[job_id]

        task.add_done_callback(forget)

    async def drain(self) -> None:
        """Wait until every pending notification has been handed over."""
        while self._chains:
            await asyncio.gather(*list(self._chains.values()), return_exceptions=True)


async def _notify(frontend: Frontend, event: JobEvent, previous: asyncio.Task[None] | None) -> None:
    if previous is not None:
        await asyncio.wait([previous])
    try:
        await asyncio.wait_for(frontend.notify(event), timeout=NOTIFY_TIMEOUT_S)
    except Exception:
        log.warning("could not show %s of job %d on %s", event.kind.value, event.job.id,
                    frontend.platform, exc_info=True)
