"""Job events to the frontend that owns each job: in order per job, never blocking the caller.

Every part of the core that changes a job (member use cases, settlement, recovery, delivery)
emits through one :class:`Notifier`, so a job's "queued → started → progress → done" edits
reach the platform in that order even though they come from different tasks.

Because every job change passes here, this is also where each state change is logged (one
``key=value`` line per change, for operators) and handed to optional listeners (the app's
metrics), so neither needs a hook anywhere else in the core.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable

from bot.core.models import EventKind, JobEvent
from bot.core.ports import Frontend

log = logging.getLogger(__name__)
job_log = logging.getLogger("bot.jobs")
"""One INFO line per job state change; its own name so operators can route or silence it."""

Listener = Callable[[JobEvent], None]

NOTIFY_TIMEOUT_S = 60.0


class Notifier:
    """Routes :class:`JobEvent` to the frontend registered for ``job.destination.platform``."""

    def __init__(self, listeners: list[Listener] | None = None) -> None:
        self.frontends: dict[str, Frontend] = {}
        self.listeners: list[Listener] = list(listeners or [])
        """Called with every event, in the emitting task; they must be quick and not block."""
        self._chains: dict[int, asyncio.Task[None]] = {}

    def register(self, frontend: Frontend) -> None:
        self.frontends[frontend.platform] = frontend

    def emit(self, event: JobEvent) -> None:
        """Queue ``event`` after the job's previous one; returns at once."""
        self.record(event)
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

    def record(self, event: JobEvent) -> None:
        """Log the state change and tell the listeners, without notifying any frontend (for a
        change the member was already told of, like the ``queued`` receipt). Neither logging
        nor a listener may break the job's path."""
        if event.kind is not EventKind.PROGRESS:
            job_log.info("%s", job_log_line(event))
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.warning("job event listener failed", exc_info=True)

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


def job_log_line(event: JobEvent, now: float | None = None) -> str:
    """``job=12 state=done platform=discord ...``: stable keys, numbers and fixed words only.

    Never the prompt, the member's message, tokens of any platform, or any other text a member
    typed: this line goes to the operator's journal.
    """
    job = event.job
    now = time.time() if now is None else now
    fields: dict[str, object] = {
        "job": job.id, "state": event.kind.value, "platform": job.destination.platform,
        "model": job.params.model, "duration": f"{job.params.duration:g}",
        "attempt": job.attempts,
    }
    if job.started_at is not None:
        fields["wait_s"] = f"{job.started_at - job.created_at:.1f}"
    if event.kind in (EventKind.DONE, EventKind.UNDELIVERED, EventKind.FAILED,
                      EventKind.CANCELLED):
        fields["total_s"] = f"{now - job.created_at:.1f}"
    if event.refunded:
        fields["refunded"] = event.refunded
    if event.position is not None:
        fields["position"] = event.position
    return " ".join(f"{key}={_plain(value)}" for key, value in fields.items())


_BARE = re.compile(r"[\w.:/@+-]+")


def _plain(value: object) -> str:
    """A value as one token: quoted when it has spaces or ``=`` (a model folder path may)."""
    text = str(value)
    return text if _BARE.fullmatch(text) else json.dumps(text)
