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
from collections.abc import Sequence
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
        ``running`` jobs (their full lengths; counted as half done) already in slots.

        While jobs still wait, every slot is busy, so all advance at the full batch's rate
        and a slot frees when its job ends: that part is k servers taking jobs in order, a
        heap of end times (O(n log k); the step-by-step replay was O(n²) and made every
        receipt at a queue depth of 500 cost milliseconds of the event loop). The jobs left
        once the last one has a slot are replayed step by step: the batch shrinks as they
        end, and its rate changes with it.
        """
        if not self._rates:
            return None
        active = [[length / 2, False] for length in running]
        waiting = [[length, i == len(queued) - 1] for i, length in enumerate(queued)]
        clock = 0.0
        while waiting and len(active) >= self.slots:  # more running than slots (other
            elapsed, active, _ = self._step(active)   # workers' jobs): none joins yet
            clock += elapsed
        free = self.slots - len(active)
        active += waiting[:free]
        if waiting[free:]:
            elapsed, active = self._full_batch(active, [length for length, _ in waiting[free:]])
            clock += elapsed
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

    def _full_batch(self, active: list[list[Any]],
                    waiting: list[float]) -> tuple[float, list[list[Any]]]:
        """Run the full batch until the last of ``waiting`` (the target) has a slot: (the
        wall seconds until then, the jobs in slots with the audio seconds each has left).
        Every slot is busy meanwhile, so all advance at one rate and a slot frees when its
        job ends: k servers taking jobs in order, a heap of end times."""
        rate = self.rate(self.slots) or 1.0
        ends = sorted(left * rate for left, _ in active)  # a sorted list is a heap
        for length in waiting[:-1]:
            heapq.heapreplace(ends, ends[0] + length * rate)  # the first to end frees a slot
        clock = heapq.heappop(ends)  # ...and the last one, the target, takes it
        return clock, [[(end - clock) / rate, False] for end in ends] + [[waiting[-1], True]]

    def eta_running(self, remaining_audio_seconds: float) -> float | None:
        """Seconds until a running job with this much audio left is made."""
        rate = self.rate(self.occupancy)
        return None if rate is None else remaining_audio_seconds * rate
