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

from collections.abc import Sequence

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
        if not self._rates:
            return None
        active = [[length / 2, False] for length in running]
        waiting = [[length, i == len(queued) - 1] for i, length in enumerate(queued)]
        clock = 0.0
        while active or waiting:
            while waiting and len(active) < self.slots:
                active.append(waiting.pop(0))
            rate = self.rate(len(active)) or 0.0
            step = min(job[0] for job in active)
            clock += step * rate
            for job in active:
                job[0] -= step
            if any(job[1] and job[0] <= 1e-9 for job in active):
                return clock
            active = [job for job in active if job[0] > 1e-9]
        return clock

    def eta_running(self, remaining_audio_seconds: float) -> float | None:
        """Seconds until a running job with this much audio left is made."""
        rate = self.rate(self.occupancy)
        return None if rate is None else remaining_audio_seconds * rate
