"""Wait-time estimates for members, from measured generation speed."""

from __future__ import annotations


class SpeedEstimator:
    """Moving average of wall seconds per second of audio per job, for ETAs."""

    def __init__(self) -> None:
        self.seconds_per_audio_second: float | None = None

    def record(self, audio_seconds: float, wall_seconds: float, batch_size: int) -> None:
        if audio_seconds <= 0 or batch_size <= 0:
            return
        sample = wall_seconds / (audio_seconds * batch_size)
        old = self.seconds_per_audio_second
        self.seconds_per_audio_second = sample if old is None else 0.7 * old + 0.3 * sample

    def eta(self, audio_seconds_ahead: float) -> float | None:
        if self.seconds_per_audio_second is None:
            return None
        return audio_seconds_ahead * self.seconds_per_audio_second
