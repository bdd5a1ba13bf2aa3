"""Crash points for fault-injection tests and benchmarks (inert unless configured).

``MUSICBOT_CRASH_AT`` holds comma-separated rules ``point[@text][#n]``: the process kills
itself with SIGKILL the ``n``-th time (default 1st) it reaches ``point`` for a job whose
prompt contains ``text``. Points: ``claimed``, ``generating``, ``rendered``, ``delivering``
(right after the platform accepted a track, before ``done`` is committed), ``delivered``.
This is how tests crash a real ``musicbot run`` at exactly the moment they mean to.
"""

from __future__ import annotations

import os
import signal
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
