"""Errors raised by the generation package.

They derive from :class:`bot.core.errors.MusicBotError`, so a frontend that shows
``err.user_message`` can show these too; the worker turns them into job failures.
"""

from __future__ import annotations

from bot.core.errors import MusicBotError


# The errors below look alike (duplicates): each is a code and one message; nothing to share.
class GenerationError(MusicBotError):
    """Generating or encoding a track failed; ``user_message`` says why in plain words."""

    code = "generation"


class ModelUnavailable(GenerationError):
    """A model could not be loaded (no network for a hub model, missing or broken folder)."""

    code = "model_unavailable"

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"The model '{source}' could not be loaded: {reason}")
        self.source = source
        self.reason = reason


class GenerationStopped(GenerationError):
    """``should_stop()`` returned true during a generate call; nothing was produced."""

    code = "stopped"

    def __init__(self) -> None:
        super().__init__("The generation was stopped before it finished.")


class GenerationOutOfMemory(GenerationError):
    """The accelerator ran out of memory for this batch; a smaller batch may fit."""

    code = "out_of_memory"

    def __init__(self, batch_size: int) -> None:
        super().__init__(
            f"The model ran out of memory generating {batch_size} track(s) at once."
        )
        self.batch_size = batch_size


class TrackTooLarge(GenerationError):
    """The encoded track cannot fit the destination's upload limit."""

    code = "too_large"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
