"""Rendering-side CPU work runs below the event loop's priority.

On a box without a GPU, decoding, encoding (ffmpeg), the waveform and the tempo/key analysis
would take time slices from the event loop that answers members within the platforms'
deadlines: the HTTP API's p99 accept latency with the debug model rendering was 107-135 ms
with everything at one priority, 70-108 ms with the decode thread niced
(docs/performance.md). Rendering loses nothing while the CPU is free, and on a GPU the
decode thread mostly waits on the device anyway.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

RENDER_NICENESS = 10
"""How much lower than the bot's event loop rendering threads run (Linux ``nice``)."""


def yield_cpu_to_the_loop() -> None:
    """Lower the calling thread's CPU priority; processes it starts (ffmpeg) inherit it.

    Linux only (``nice`` is per thread there); elsewhere a thread id is not a pid, so
    nothing changes.
    """
    if sys.platform != "linux":
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), RENDER_NICENESS)
    except OSError as exc:  # a sandbox that forbids it: run at the normal priority
        log.debug("could not lower a rendering thread's priority: %s", exc)
