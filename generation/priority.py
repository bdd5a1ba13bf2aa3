"""The decode thread runs below the event loop's priority.

On a box without a GPU the decode thread would take time slices from the event loop that
answers members within the platforms' deadlines. Niced, it leaves them to the loop while
the loop has work (the HTTP API's p99 accept latency with the debug model rendering went
from 105-135 ms to 98-119 ms in one A/B; docs/performance.md), and loses nothing while the
CPU is free; on a GPU it mostly waits on the device anyway. Only the decode thread: the
threads that encode and analyse tracks hold the GIL in bursts, and a niced thread holding
the GIL makes the loop wait for it (that variant measured worse).
"""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

RENDER_NICENESS = 10
"""How much lower than the bot's event loop the decode thread runs (Linux ``nice``)."""


def yield_cpu_to_the_loop() -> None:
    """Lower the calling thread's CPU priority.

    Linux only (``nice`` is per thread there); elsewhere a thread id is not a pid, so
    nothing changes.
    """
    if sys.platform != "linux":
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), RENDER_NICENESS)
    except OSError as exc:  # a sandbox that forbids it: run at the normal priority
        log.debug("could not lower the decode thread's priority: %s", exc)
