"""Overall progress of a generate call that may slide a window over several model calls.

audiocraft reports ``(generated, total)`` per window (``total`` is that window's step count),
so the fraction it implies jumps back at each new window. :class:`WindowProgress` counts
decoding steps against a plan of all windows made up front by :func:`window_steps`.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def windows(
    duration: float, max_duration: float, stride: float, frame_rate: float, prompt_frames: int = 0
) -> list[tuple[int, int]]:
    """``(length, prompt)`` frames of each model call, mirroring ``MusicGen._generate_tokens``."""
    total = int(duration * frame_rate)
    if duration <= max_duration:
        return [(total, prompt_frames)]
    stride_frames = int(frame_rate * stride)
    calls, offset, prompt = [], 0, prompt_frames
    while offset + prompt < total:
        chunk = min(duration - offset / frame_rate, max_duration)
        length = int(chunk * frame_rate)
        calls.append((length, prompt))
        prompt = length - stride_frames
        offset += stride_frames
    return calls


def safe_duration(
    seconds: float, max_duration: float, stride: float, frame_rate: float, prompt_frames: int = 0
) -> float:
    """A duration to ask audiocraft for that yields at least ``seconds`` of audio.

    audiocraft floors ``duration * frame_rate`` per window, so 1.1 s gives 27 frames (1.08 s)
    and some long durations lose a frame or make a last window no longer than its prompt
    (an assertion error inside ``LMModel.generate``). Round up to whole frames, then check
    the window plan and add frames until it is sound. The caller trims the surplus.
    """
    needed = math.ceil(seconds * frame_rate - 1e-6)
    candidate = (needed + 0.01) / frame_rate
    if seconds <= max_duration:
        return min(candidate, max_duration)
    for _ in range(8):
        plan = windows(candidate, max_duration, stride, frame_rate, prompt_frames)
        made = prompt_frames + sum(length - prompt for length, prompt in plan)
        if made >= needed and all(length > prompt for length, prompt in plan):
            return candidate
        candidate += 1 / frame_rate
    raise ValueError(f"no sound window plan for {seconds} s")  # pragma: no cover


def window_steps(
    duration: float,
    max_duration: float,
    stride: float,
    frame_rate: float,
    prompt_frames: int = 0,
) -> list[int]:
    """Approximate decoding steps of each window (audiocraft adds the codebook delay).

    :class:`WindowProgress` replaces each estimate with audiocraft's real count once that
    window starts.
    """
    plan = windows(duration, max_duration, stride, frame_rate, prompt_frames)
    return [max(1, length - prompt) for length, prompt in plan]


class WindowProgress:
    """Turns per-step callbacks into one 0..1 fraction across all windows."""

    def __init__(self, plan: list[int], report: Callable[[float], None] | None) -> None:
        self.plan = plan
        self.report = report
        self.window = 0
        self.in_window = 0
        self.done = 0
        self.steps = 0
        self.reported = 0.0

    def step(self, window_total: int) -> None:
        """One decoding step of a window whose real length is ``window_total``."""
        self.steps += 1
        self.in_window += 1
        remaining = sum(self.plan[self.window + 1 :])
        fraction = (self.done + self.in_window) / max(1, self.done + window_total + remaining)
        if self.in_window >= window_total:
            self.done += window_total
            self.in_window = 0
            self.window += 1
        # Estimates are replaced by real counts as windows start: never let the bar go back.
        # Decoding audio from tokens still follows, so the last step is not 100%.
        self.reported = max(self.reported, min(fraction, 0.99))
        if self.report is not None:
            self.report(self.reported)

    def finish(self) -> None:
        if self.report is not None:
            self.report(1.0)
