"""Who holds a job: process ids, lease renewal (heartbeat) and dead-owner detection.

A process claims jobs under :func:`new_owner_id` and renews every lease it holds each
``heartbeat_s`` while it lives. Another process may take a job over only when its lease
expired, or — on the same host — when the owner's pid no longer exists (so a restart after
SIGKILL resumes the dead process's work at once instead of after a lease period).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable, Collection

from bot.core import jobs
from bot.core.clock import SharedClock
from bot.core.db import Database

log = logging.getLogger(__name__)


def new_owner_id() -> str:
    """``host:pid:random``: unique per process start, and tells where the process lives."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def owner_is_dead(owner: str) -> bool:
    """True only when ``owner`` surely runs no more: same host, and its pid is gone.

    Anything else (another host, a pid that exists, perhaps reused) waits for the lease.
    """
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # exists, owned by another user
    return False


class LeaseKeeper:
    """Renews this process's leases; reports which of its running jobs were asked to stop.

    Renewed: the running jobs ``held()`` names (the ones the worker still works on) and the
    deliveries this process holds. A running job the process no longer works on — its
    settling failed for good — is not renewed, so its lease lapses and recovery takes it.

    ``on_renewed(held)`` gets ``{job_id: cancel_requested}`` for every job still held, so a
    cancel typed in another process reaches the worker within one heartbeat.
    """

    def __init__(
        self, db: Database, owner: str, *, lease_s: float,
        on_renewed: Callable[[dict[int, bool]], None], clock: SharedClock | None = None,
        held: Callable[[], Collection[int]] = tuple,
    ) -> None:
        self.db = db
        self._held = held
        self.owner = owner
        self.lease_s = lease_s
        self.heartbeat_s = min(1.0, lease_s / 3)
        self._on_renewed = on_renewed
        self._clock = clock or SharedClock()

    async def renew(self) -> dict[int, bool]:
        """One heartbeat (and, now and then, a new measure of the clock's offset)."""
        await self._clock.sync(self.db)
        async with self.db.write() as conn:
            held = dict(await jobs.renew_leases(conn, self.owner, self._clock() + self.lease_s,
                                                running=self._held()))
        self._on_renewed(held)
        return held

    async def run_forever(self) -> None:
        while True:
            try:
                await self.renew()
            except Exception:  # a busy database must not end the heartbeat for good
                log.warning("lease renewal failed; retrying", exc_info=True)
            await asyncio.sleep(self.heartbeat_s)
