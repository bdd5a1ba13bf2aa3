"""Crash points for fault-injection tests and benchmarks (inert unless configured).

``MUSICBOT_CRASH_AT`` holds comma-separated rules ``point[@text][#n]``: the process kills
itself with SIGKILL the ``n``-th time (default 1st) it reaches ``point`` for a job whose
prompt contains ``text``. Points: ``claimed``, ``generating``, ``rendered``, ``delivering``
(right after the platform accepted a track, before ``done`` is committed), ``delivered``.
This is how tests crash a real ``musicbot run`` at exactly the moment they mean to.

``MUSICBOT_TRACE`` names a file that every process appends ``time pid event job`` lines to
(:func:`trace`): the multi-process tests read from it when each job was being rendered where.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class _Rule:
    point: str
    text: str
    nth: int


def _rules(spec: str) -> list[_Rule]:
    rules = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        item, _, nth = item.partition("#")
        point, _, text = item.partition("@")
        rules.append(_Rule(point, text, int(nth) if nth.isdigit() else 1))
    return rules


_RULES = _rules(os.environ.get("MUSICBOT_CRASH_AT", ""))
_hits: Counter[_Rule] = Counter()


def crash_point(point: str, prompt: str = "") -> None:
    """Die here if a rule says so (SIGKILL: no cleanup, no flush, like a power cut)."""
    if not _RULES:
        return
    for rule in _RULES:
        if rule.point == point and rule.text in prompt:
            _hits[rule] += 1
            if _hits[rule] == rule.nth:
                os.kill(os.getpid(), signal.SIGKILL)


_TRACE = os.environ.get("MUSICBOT_TRACE", "")


def trace(event: str, job_id: int) -> None:
    """Append ``time pid event job`` to the trace file, if one is configured.

    One ``write`` on an ``O_APPEND`` descriptor per line: lines of several processes never mix.
    """
    if not _TRACE:
        return
    line = f"{time.time():.6f} {os.getpid()} {event} {job_id}\n".encode()
    fd = os.open(_TRACE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
