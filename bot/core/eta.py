"""Wait-time estimates for members: a small simulation of the continuous batch.

The worker runs up to ``slots`` jobs at once; each job advances at a rate that depends on how
many share the batch. :class:`SpeedEstimator` learns that rate from finished jobs — seconds of
wall time per second of audio, per occupancy (how many jobs were decoding together) — and
answers "when will this job be made?" by replaying the queue: running jobs (counted as half
done) and the queued jobs ahead in fair order take slots as they free, every one advancing at
the measured rate for the current occupancy. An occupancy never measured is interpolated
between measured ones (the worker's warm-up measures one job alone and a full batch).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from typing import Any

EMA_WEIGHT = 0.3
"""How much a new measurement moves the estimate (the rest is history)."""


class SpeedEstimator:
    """Measured generation speed, and queue ETAs derived from it."""

    def __init__(self, slots: int = 1) -> None:
        self.slots = max(1, slots)
        self._rates: dict[int, float] = {}
        """Occupancy → wall seconds per audio second of one job."""
        self.occupancy = 1
        """Jobs decoding together at the last measurement."""

    def record(self, audio_seconds: float, wall_seconds: float, batch_size: int) -> None:
        """A job of ``audio_seconds`` took ``wall_seconds`` while ``batch_size`` decoded."""
        if audio_seconds <= 0 or wall_seconds <= 0 or batch_size <= 0:
            return
        occupancy = min(batch_size, self.slots)
        sample = wall_seconds / audio_seconds
        old = self._rates.get(occupancy)
        self._rates[occupancy] = sample if old is None else (
            (1 - EMA_WEIGHT) * old + EMA_WEIGHT * sample)
        self.occupancy = occupancy

    def rate(self, occupancy: int) -> float | None:
        """Wall seconds per audio second of one job at ``occupancy`` (None: never measured):
        measured, else interpolated between the nearest measured occupancies around it,
        else the nearest measured one."""
        if not self._rates:
            return None
        if occupancy in self._rates:
            return self._rates[occupancy]
        below = [k for k in self._rates if k < occupancy]
        above = [k for k in self._rates if k > occupancy]
        if below and above:
            low, high = max(below), min(above)
            share = (occupancy - low) / (high - low)
            return self._rates[low] + share * (self._rates[high] - self._rates[low])
        return self._rates[max(below) if below else min(above)]

    def eta(self, queued: Sequence[float], running: Sequence[float] = ()) -> float | None:
        """Seconds until the last of ``queued`` (audio seconds, in queue order) is made, with
        ``running`` jobs (their full lengths; counted as half done) already in slots."""
        return self.etas(queued, running, [len(queued)])[len(queued)]

    def etas(self, queued: Sequence[float], running: Sequence[float],
             places: Iterable[int]) -> dict[int, float | None]:
        """:meth:`eta` of ``queued[:place]`` for every one of ``places`` (1-based; 0: none
        queued, the time until the running jobs end), in one pass over the queue: one queue
        walk answers every receipt waiting for it (:mod:`bot.core.places`).

        While jobs still wait, every slot is busy, so all advance at the full batch's rate
        and a slot frees when its job ends: that part is k servers taking jobs in order, a
        heap of end times (O(n log k); the step-by-step replay was O(n²) and made every
        receipt at a queue depth of 500 cost milliseconds of the event loop). The jobs left
        once a target has its slot are replayed step by step: the batch shrinks as they end,
        and its rate changes with it.
        """
        wanted = sorted(set(places))
        if not self._rates:
            return dict.fromkeys(wanted)
        found: dict[int, float | None] = {}
        active = [[length / 2, False] for length in running]
        if wanted and wanted[0] <= 0:
            found[wanted.pop(0)] = self._until_target([[left, False] for left, _ in active])
        clock = 0.0
        while wanted and len(active) >= self.slots:  # more running than slots (other
            elapsed, active, _ = self._step(active)  # workers' jobs): none joins yet
            clock += elapsed
        free = self.slots - len(active)
        for place in [place for place in wanted if place <= free]:  # a slot at once
            batch = [[left, False] for left, _ in active]
            batch += [[length, False] for length in queued[:place - 1]]
            found[place] = clock + self._until_target([*batch, [queued[place - 1], True]])
        later = [place for place in wanted if place > free]
        if later:
            rate = self.rate(self.slots) or 1.0
            ends = sorted([left * rate for left, _ in active]  # a sorted list is a heap
                          + [length * rate for length in queued[:free]])
            joined = free  # queued[:joined] have had their slots
            for place in later:
                for length in queued[joined:place - 1]:  # the first to end frees a slot
                    heapq.heapreplace(ends, ends[0] + length * rate)
                joined = place - 1
                left = list(ends)
                start = heapq.heappop(left)  # ...and the target takes the next one
                batch = [[(end - start) / rate, False] for end in left]
                found[place] = clock + start + self._until_target(
                    [*batch, [queued[place - 1], True]])
        return found

    def _until_target(self, active: list[list[Any]]) -> float:
        """Wall seconds until the target among ``active`` ends (or all do, if none is it)."""
        clock = 0.0
        while active:
            elapsed, active, target_done = self._step(active)
            clock += elapsed
            if target_done:
                break
        return clock

    def _step(self, active: list[list[Any]]) -> tuple[float, list[list[Any]], bool]:
        """Advance the batch until its shortest job ends: (wall seconds, the jobs left,
        whether the target job ended)."""
        rate = self.rate(len(active)) or 0.0
        step = min(job[0] for job in active)
        for job in active:
            job[0] -= step
        ended = [job for job in active if job[0] <= 1e-9]
        return (step * rate, [job for job in active if job[0] > 1e-9],
                any(target for _, target in ended))

    def eta_running(self, remaining_audio_seconds: float) -> float | None:
        """Seconds until a running job with this much audio left is made."""
        rate = self.rate(self.occupancy)
        return None if rate is None else remaining_audio_seconds * rate
