"""The root of every error the bot raises on purpose, and the configuration error.

A leaf module: :mod:`bot.config` raises :class:`ConfigError` without importing the core (the
arrows point from the core to the config, never back); :mod:`bot.core.errors` re-exports both,
so ``except MusicBotError`` and ``except ConfigError`` work wherever they are imported from.
"""

from __future__ import annotations


class MusicBotError(Exception):
    """Base of every error the bot raises on purpose.

    ``code`` is a stable machine name; ``user_message`` is a complete sentence for the member.
    """

    code = "error"

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


# Looks like the core's errors (duplicates): a code and one message; nothing to share.
class ConfigError(MusicBotError):
    """The configuration file or environment is wrong; ``key`` names the offending setting."""

    code = "config"

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"Configuration error at '{key}': {reason}")
        self.key = key
        self.reason = reason
