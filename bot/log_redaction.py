"""Keep bearer URLs, tokens and outside request bodies out of every log line.

slack_bolt and slack_sdk log whole payloads (with ``response_url`` s, which let anyone post
as the app for 30 minutes) at DEBUG, and the full body of every forged request at INFO.
bolt sets each child logger's level itself (copied from the root when the app is built), so
a level on the ``slack_bolt`` parent does not silence them, and a filter on a logger does
not see its children's records. Hence :class:`RedactSecrets` goes on the *handlers*, where
every record passes whatever logger it came from.
"""

from __future__ import annotations

import logging
import re

_URL_KEYS = (r"response_url|webhook_url|url_private(?:_download)?|upload_url"
             r"|(?:interaction_)?token")
"""Keys whose values are bearer credentials (a stored job destination has the
response_url or Discord interaction token under ``interaction_token``)."""
_DSN = re.compile(r"\b(postgres(?:ql)?://[^:/@\s'\"]*):[^@\s'\"]*@")
"""A database URL's password (postgresql://user:secret@host/db)."""
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # incoming webhooks and response_urls: the path is the credential
    (re.compile(r"hooks\.slack\.com/[^\s'\"<>,}]+"), "hooks.slack.com/***"),
    (re.compile(r"hooks%2Eslack%2Ecom%2F[^\s'\"&,}]+|hooks\.slack\.com%2F[^\s'\"&,}]+",
                re.IGNORECASE), "hooks.slack.com/***"),
    # a bearer URL under its key, in JSON, a Python repr or a form body (any host: tests
    # and Enterprise Grid use others)
    (re.compile(rf"""(\b(?:{_URL_KEYS})['"]?\s*[:=]\s*['"]?)[^'"\s,&}}]+"""), r"\1***"),
    # a database URL's password (postgresql://user:secret@host/db)
    (_DSN, r"\1:***@"),
    # Slack tokens: bot, user, app-level, config, refresh
    (re.compile(r"\bxox[a-z]-[A-Za-z0-9-]+"), "xox?-***"),
    (re.compile(r"\bxapp-[A-Za-z0-9-]+"), "xapp-***"),
    # musicbot's own HTTP API keys and webhook secrets (bot/core/apikeys.py)
    (re.compile(r"\b(mb_[0-9a-f]+_)[A-Za-z0-9_-]+"), r"\1***"),
    (re.compile(r"\bwhsec_[A-Za-z0-9_-]+"), "whsec_***"),
)
_BODY = re.compile(
    r"(?is)\b(request body|body_params|json_body|body|payload|message|query_params|params"
    r"|data)"
    r"(\s*[:=]\s*|\s*\(\s*)[\[{(\"'a-z0-9%].*$")
_ANY_URL = re.compile(r"https?://[^\s'\",}]+")
_OUTSIDE = ("slack_bolt", "slack_sdk", "slack")
"""Loggers of libraries that print what Slack (or a forger) sent."""
_WEBHOOK_LOGGERS = "slack_sdk.webhook"
"""Every URL this client calls is a response_url or incoming webhook: a bearer URL."""


def redact(text: str, *, bodies: bool = False, urls: bool = False) -> str:
    """``text`` without bearer URLs and tokens; with ``bodies``, also without the request
    or response body a library appended (everything after ``body:``, ``payload:``…); with
    ``urls``, without any URL at all."""
    if bodies:
        text = _BODY.sub(lambda m: f"{m.group(1)}: [redacted]", text)
    if urls:
        text = _ANY_URL.sub("<webhook URL>", text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_dsn(text: str) -> str:
    """``text`` with the password of any ``postgresql://user:password@host`` URL masked."""
    return _DSN.sub(r"\1:***@", text)


class RedactSecrets(logging.Filter):
    """Rewrites each record's message (and traceback text) before any handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        outside = record.name.split(".")[0] in _OUTSIDE or ":" in record.name
        try:
            text = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler's own error path
            return True
        cleaned = redact(text, bodies=outside,
                         urls=record.name.startswith(_WEBHOOK_LOGGERS))
        if cleaned != text:
            record.msg, record.args = cleaned, ()
        if record.exc_info and outside:
            # Exception texts of slack_sdk quote responses; keep the type, drop the details.
            record.exc_text = f"{record.exc_info[0].__name__ if record.exc_info[0] else ''}"
            record.exc_info = None
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Put :class:`RedactSecrets` on every handler of ``logger`` (default: the root) and on
    the outside libraries' loggers, once. Call after logging is configured."""
    targets: list[logging.Filterer] = [*(logger or logging.getLogger()).handlers]
    targets += [logging.getLogger(name) for name in _OUTSIDE]
    for target in targets:
        if not any(isinstance(f, RedactSecrets) for f in target.filters):
            target.addFilter(RedactSecrets())
