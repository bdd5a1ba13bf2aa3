"""Errors of the core: one base class, structured fields, a message fit to show a member.

Every frontend catches :class:`MusicBotError` and shows ``err.user_message`` as it is; the
fields let a frontend render richer replies (buttons, retry times) without parsing text.
"""

from __future__ import annotations

import math

# Defined beside the config (which must not import the core); re-exported here for the core
# and the frontends.
from bot.errors import ConfigError, MusicBotError

__all__ = [
    "ConfigError", "DeliveryError", "InsufficientTokens", "InvalidRequest", "JobNotCancellable",
    "JobNotFound", "LimitReached", "MusicBotError", "NotAuthorized", "NothingToCancel",
    "ServiceUnavailable", "format_wait",
]


# The errors below look alike (duplicates): each is a code and one message; nothing to share.
class InvalidRequest(MusicBotError):
    """A field of a request is missing, malformed or out of range."""

    code = "invalid"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"Invalid {field}: {reason}")
        self.field = field
        self.reason = reason


class InsufficientTokens(MusicBotError):
    """The member's balance does not cover the price; nothing was charged."""

    code = "insufficient_tokens"

    def __init__(self, balance: int, price: int) -> None:
        super().__init__(
            f"Not enough tokens: this costs {price} and your balance is {balance}. "
            "Try a shorter duration or ask an admin for tokens."
        )
        self.balance = balance
        self.price = price


class LimitReached(MusicBotError):
    """A usage limit was hit; ``retry_after_s`` says when trying again can succeed (if known)."""

    code = "limit"

    def __init__(self, limit: str, detail: str, retry_after_s: float | None = None) -> None:
        when = ""
        if retry_after_s is not None:
            when = f" Try again in {format_wait(retry_after_s)}."
        super().__init__(f"{detail}{when}")
        self.limit = limit
        self.retry_after_s = retry_after_s


class NotAuthorized(MusicBotError):
    """The actor may not perform ``action`` (admin commands, cancelling others' jobs)."""

    code = "not_authorized"

    def __init__(self, action: str) -> None:
        super().__init__(f"You are not allowed to {action}.")
        self.action = action


class JobNotFound(MusicBotError):
    """No job with that id exists in the member's reach."""

    code = "job_not_found"

    def __init__(self, job_id: int | str) -> None:
        super().__init__(f"Job #{job_id} was not found.")
        self.job_id = job_id


class NothingToCancel(MusicBotError):
    """``/cancel`` without a job id, and the member has nothing queued or running."""

    code = "nothing_to_cancel"

    def __init__(self) -> None:
        super().__init__("You have no queued or running job to cancel.")


class JobNotCancellable(MusicBotError):
    """The job already finished, failed or was cancelled."""

    code = "job_not_cancellable"

    def __init__(self, job_id: int, state: str) -> None:
        super().__init__(f"Job #{job_id} is already {state} and cannot be cancelled.")
        self.job_id = job_id
        self.state = state


class ServiceUnavailable(MusicBotError):
    """The bot is shutting down or the model is not loaded."""

    code = "unavailable"


def format_wait(seconds: float) -> str:
    """Render a wait as "45 s", "3 min" or "2 h 5 min" for members."""
    seconds = max(0, math.ceil(seconds))
    if seconds < 90:
        return f"{seconds} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


class DeliveryError(MusicBotError):
    """A frontend could not hand a finished track to the platform.

    ``retryable`` tells the core whether trying again later may help (rate limit, network);
    when it gives up, the member is told to fetch the track with /track (no refund: the track
    exists; see docs/guarantees.md).
    """

    code = "delivery"

    def __init__(self, reason: str, retryable: bool = True) -> None:
        super().__init__(f"Could not deliver the track: {reason}")
        self.reason = reason
        self.retryable = retryable
