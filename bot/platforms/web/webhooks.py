"""Completion webhooks: POST a finished track's JSON to a member-given URL, signed.

The request is signed like Stripe's: ``X-Musicbot-Signature: t=<unix>,v1=<hex>`` where
``hex = HMAC-SHA256(secret, f"{t}.{body}")`` and ``secret`` is the API key's
``webhook_secret``; receivers check it with :func:`verify` (docs/track-pages.md shows how).

A member picks the URL, so the server must not become their way into our network (SSRF):
:func:`check_url` refuses anything but http(s) to public addresses (unless the operator sets
``api.webhooks_allow_private``), and every attempt checks again *and* connects through a
resolver that refuses private answers, so a DNS name that turns private after the check (DNS
rebinding) reaches nothing. Redirects are never followed, proxies from the environment are
not used. Sending runs in background tasks (:meth:`WebhookSender.schedule`): a slow or dead
receiver never delays the chat message or the API's answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from bot.config import Config
from bot.core.errors import InvalidRequest
from bot.core.models import Job, Track

log = logging.getLogger(__name__)

FIELD = "webhook_url"
SIGNATURE_HEADER = "X-Musicbot-Signature"
MAX_URL_CHARS = 2000
RETRY_STATUSES = frozenset({408, 425, 429})
"""Answers worth another try besides 5xx (the receiver was busy, not refusing)."""
TOLERANCE_S = 300
"""How old a signature :func:`verify` accepts: a replayed request older than this fails."""


# ------------------------------------------------------------------------ URL checks

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class _Blocked(OSError):
    """An address we must not connect to (raised inside aiohttp's resolver: an OSError)."""


def is_public(address: str) -> bool:
    """True for a globally routable unicast address; False for loopback, private, link-local,
    multicast, reserved, unspecified and shared (CGNAT) ranges, also inside IPv4-mapped IPv6."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    elif isinstance(ip, ipaddress.IPv6Address) and ip in _NAT64:
        ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)  # a NAT64 gateway would go there
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback
                                 or ip.is_link_local or ip.is_private or ip.is_unspecified)


def _addresses(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidRequest(FIELD, f"names a host that does not resolve ({host})") from exc
    return sorted({str(info[4][0]) for info in infos})


def check_url(url: str, allow_private: bool) -> str:
    """The URL, if a webhook may be sent there; raises ``InvalidRequest("webhook_url", …)``.

    Refused: anything but ``http``/``https``, credentials in the URL, hosts that do not
    resolve, and (unless ``allow_private``) hosts resolving to any non-public address. Blocks
    on DNS: call it in a thread from async code.
    """
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL_CHARS:
        raise InvalidRequest(FIELD, f"must be a URL of at most {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidRequest(FIELD, "is not a valid URL") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(FIELD, "must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest(FIELD, "must not contain a user name or password")
    if not allow_private:
        for address in _addresses(parts.hostname, port):
            if not is_public(address):
                raise InvalidRequest(FIELD, f"points to a private or local address ({address});"
                                     " webhooks go only to public hosts")
    return parts.geturl()


class _PublicOnlyResolver(AbstractResolver):
    """aiohttp resolver that refuses non-public answers: the address we connect to is the
    address we checked, whatever DNS says between the check and the connection."""

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if not is_public(result["host"]):
                raise _Blocked(f"{host} resolved to the non-public address {result['host']}")
        return results

    async def close(self) -> None:
        await self._inner.close()


# ------------------------------------------------------------------------ signatures

def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``f"{timestamp}.{body}"`` with ``secret``."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Musicbot-Signature`` value: ``t=<unix>,v1=<hex>``."""
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify(secret: str, header: str, body: bytes, *, now: float | None = None,
           tolerance_s: float = TOLERANCE_S) -> bool:
    """What a receiver runs: the signature matches and is not older than ``tolerance_s``."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), fields.get("v1", ""))


# ------------------------------------------------------------------------ sending

@dataclass(frozen=True)
class WebhookResult:
    """How one webhook ended: ``delivered`` after ``attempts`` tries, or why not."""

    delivered: bool
    attempts: int
    status: int | None = None
    error: str = ""


class _Retry(Exception):
    """This attempt failed in a way another attempt may fix."""


Sleep = Callable[[float], Awaitable[Any]]


class WebhookSender:
    """Signs and POSTs track JSON with retries; :meth:`schedule` runs it in the background."""

    def __init__(self, *, allow_private: bool = False, retry_delays_s: Sequence[float] = (),
                 timeout_s: float = 10.0, sleep: Sleep = asyncio.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        self.allow_private = allow_private
        self.retry_delays_s = list(retry_delays_s)
        self.timeout_s = timeout_s
        self._sleep = sleep
        self._clock = clock
        self._tasks: set[asyncio.Task[WebhookResult]] = set()

    @classmethod
    def from_config(cls, config: Config) -> WebhookSender:
        """Private-address rule and timeout from ``api``, waits from ``delivery``."""
        return cls(allow_private=config.api.webhooks_allow_private,
                   retry_delays_s=config.delivery.retry_delays_s,
                   timeout_s=config.api.webhook_timeout_s)

    def schedule(self, url: str, payload: dict[str, Any], secret: str) -> asyncio.Task[
            WebhookResult]:
        """Send in a background task and return at once (the caller never waits on it)."""
        task = asyncio.create_task(self.send(url, payload, secret), name="webhook")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        """Stop sending: cancel webhooks still waiting or retrying (at shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def send(self, url: str, payload: dict[str, Any], secret: str) -> WebhookResult:
        """POST ``payload`` to ``url``, retrying after each of ``retry_delays_s``.

        Never raises for the receiver's sake: the result says what happened.
        """
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        delivery = uuid.uuid4().hex  # the same on every retry: receivers can drop repeats
        attempt, error, status = 0, "", None
        for delay in [0.0, *self.retry_delays_s]:
            if delay:
                await self._sleep(delay)
            attempt += 1
            try:
                status = await self._post(url, body, secret, delivery)
                return WebhookResult(True, attempt, status)
            except _Retry as retry:
                error = str(retry)
            except (InvalidRequest, _Refused) as final:
                error = final.user_message if isinstance(final, InvalidRequest) else str(final)
                break
        log.warning("webhook to %s gave up after %d attempt(s): %s", _host(url), attempt, error)
        return WebhookResult(False, attempt, status, error)

    async def _post(self, url: str, body: bytes, secret: str, delivery: str) -> int:
        await asyncio.to_thread(check_url, url, self.allow_private)  # again: DNS may change
        headers = {
            "Content-Type": "application/json", "User-Agent": "musicbot-webhook/1",
            "X-Musicbot-Delivery": delivery,
            SIGNATURE_HEADER: signature_header(secret, body, int(self._clock())),
        }
        resolver = None if self.allow_private else _PublicOnlyResolver()
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                             trust_env=False) as session, \
                    session.post(url, data=body, headers=headers, allow_redirects=False) as reply:
                status = reply.status
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, _Blocked):
                raise _Refused(str(exc.os_error)) from exc
            raise _Retry(f"cannot connect: {exc.os_error}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}" if str(exc) else
                         f"no answer within {self.timeout_s:g} s") from exc
        if 200 <= status < 300:
            return status
        if status >= 500 or status in RETRY_STATUSES:
            raise _Retry(f"HTTP {status}")
        if 300 <= status < 400:
            raise _Refused(f"HTTP {status}: redirects are not followed")
        raise _Refused(f"HTTP {status}")


SecretOf = Callable[[Job], Awaitable[str | None]]
PayloadOf = Callable[[Job, Track | None, Any], Awaitable[dict[str, Any]]]


def completion_hook(sender: WebhookSender, secret_of: SecretOf,
                    payload_of: PayloadOf) -> Callable[[Job, Track | None, Any],
                                                       Awaitable[None]]:
    """The API frontend's ``webhook`` hook: for a job whose destination carries a
    ``webhook_url``, build its track object and schedule the signed POST, returning at once.

    ``secret_of(job)`` gives the webhook secret of the key that made the job (None: no
    webhook), ``payload_of(job, track, context)`` the JSON track object.
    """
    async def hook(job: Job, track: Track | None, context: Any) -> None:
        url = job.destination.extra.get("webhook_url")
        if not url:
            return
        secret = await secret_of(job)
        if not secret:
            log.warning("job %d has a webhook but its key has no secret (revoked?)", job.id)
            return
        sender.schedule(str(url), await payload_of(job, track, context), secret)

    return hook


class _Refused(Exception):
    """This attempt failed in a way retrying will not fix (4xx, redirect, blocked address)."""


def _host(url: str) -> str:
    """Only the host goes to the log: the path or query may carry the receiver's secret."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"
