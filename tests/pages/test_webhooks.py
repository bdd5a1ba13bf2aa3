"""Completion webhooks against a real aiohttp server on 127.0.0.1, and the URLs we refuse."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from bot.core.errors import InvalidRequest
from bot.core.models import Job, Track
from bot.platforms.web.webhooks import (
    SIGNATURE_HEADER,
    WebhookSender,
    _Blocked,
    _PublicOnlyResolver,
    check_url,
    completion_hook,
    verify,
)

SECRET = "whsec_test_0123456789"
TRACK = {"id": 12, "status": "completed", "prompt": "lofi <b>beat</b>", "duration": 4.0}


@dataclass
class Receiver:
    """A webhook endpoint: answers with the next planned status (200 when none left)."""

    url: str
    plan: list[int | str] = field(default_factory=list)
    seen: list[web.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Callable[..., Receiver]]:
    runners: list[web.AppRunner] = []
    hang_until = asyncio.Event()  # set at teardown: a "slow" receiver then lets go

    async def start(*plan: int | str, redirect_to: str = "") -> Receiver:
        box = Receiver("", list(plan))

        async def hook(request: web.Request) -> web.StreamResponse:
            box.seen.append(request)
            box.bodies.append(await request.read())
            step = box.plan.pop(0) if box.plan else 200
            if step == "slow":
                await hang_until.wait()
            if isinstance(step, int) and 300 <= step < 400:
                raise web.HTTPFound(redirect_to)
            return web.Response(status=step if isinstance(step, int) else 200)

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        box.url = f"http://127.0.0.1:{port}/hook"
        return box

    yield start  # type: ignore[misc]
    hang_until.set()
    for runner in runners:
        await runner.cleanup()


class Sleeps(list[float]):
    """Records the backoff instead of waiting it (no timing in tests)."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def sender(sleeps: Sleeps | None = None, **extra: object) -> WebhookSender:
    options: dict[str, object] = {"allow_private": True, "retry_delays_s": [2.0, 10.0, 30.0],
                                  "timeout_s": 5.0,
                                  "sleep": Sleeps() if sleeps is None else sleeps}
    options.update(extra)
    return WebhookSender(**options)  # type: ignore[arg-type]


async def test_the_track_json_arrives_signed(receiver: Callable[..., Receiver]) -> None:
    box = await receiver()
    result = await sender().send(box.url, TRACK, SECRET)
    assert result.delivered and result.attempts == 1 and result.status == 200
    [request], [body] = box.seen, box.bodies
    assert json.loads(body) == TRACK
    assert request.headers["Content-Type"] == "application/json"
    header = request.headers[SIGNATURE_HEADER]
    assert header.startswith("t=") and ",v1=" in header
    assert verify(SECRET, header, body)
    assert not verify("another secret", header, body)
    assert not verify(SECRET, header, body + b" ")
    assert not verify(SECRET, header, body, now=int(header[2:].split(",")[0]) + 3600)


async def test_failures_are_retried_with_backoff_then_succeed(
        receiver: Callable[..., Receiver]) -> None:
    box = await receiver(500, 429, 200)
    sleeps = Sleeps()
    result = await sender(sleeps).send(box.url, TRACK, SECRET)
    assert result.delivered and result.attempts == 3
    assert sleeps == [2.0, 10.0]
    ids = {r.headers["X-Musicbot-Delivery"] for r in box.seen}
    assert len(ids) == 1  # one delivery id across retries, so receivers can drop repeats


async def test_it_gives_up_after_the_last_wait(receiver: Callable[..., Receiver]) -> None:
    box = await receiver(503, 503, 503, 503, 503)
    result = await sender().send(box.url, TRACK, SECRET)
    assert not result.delivered and result.attempts == 4 and "503" in result.error
    assert len(box.seen) == 4


async def test_a_refusal_is_not_retried(receiver: Callable[..., Receiver]) -> None:
    box = await receiver(400)
    result = await sender().send(box.url, TRACK, SECRET)
    assert not result.delivered and result.attempts == 1 and len(box.seen) == 1


async def test_redirects_to_other_hosts_are_not_followed(
        receiver: Callable[..., Receiver]) -> None:
    elsewhere = await receiver()
    box = await receiver(302, redirect_to=elsewhere.url.replace("127.0.0.1", "localhost"))
    result = await sender().send(box.url, TRACK, SECRET)
    assert not result.delivered and "redirect" in result.error
    assert elsewhere.seen == []


async def test_a_receiver_that_hangs_times_out_and_is_retried(
        receiver: Callable[..., Receiver]) -> None:
    box = await receiver("slow", 200)
    result = await sender(timeout_s=0.5).send(box.url, TRACK, SECRET)
    assert result.delivered and result.attempts == 2


async def test_scheduling_never_waits_for_the_receiver(
        receiver: Callable[..., Receiver]) -> None:
    box = await receiver("slow")
    webhooks = sender(timeout_s=5.0, retry_delays_s=[])
    task = webhooks.schedule(box.url, TRACK, SECRET)
    assert not task.done()  # the caller went on (to post the chat message) at once
    while not box.seen:
        await asyncio.sleep(0.01)
    await webhooks.aclose()
    assert task.cancelled()


async def test_local_receivers_are_refused_unless_the_operator_allows_them(
        receiver: Callable[..., Receiver]) -> None:
    box = await receiver()
    for url in (box.url, box.url.replace("127.0.0.1", "localhost")):
        result = await sender(allow_private=False).send(url, TRACK, SECRET)
        assert not result.delivered and result.attempts == 1
        assert "private or local" in result.error
    assert box.seen == []


async def test_a_name_that_resolves_to_a_private_address_at_connect_time_is_blocked() -> None:
    # What the connection uses: even if a check passed before, a private answer is refused.
    resolver = _PublicOnlyResolver()
    try:
        with pytest.raises(_Blocked):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


@pytest.mark.parametrize("url", [
    "ftp://example.org/hook", "javascript:alert(1)", "file:///etc/passwd", "http://", "hook",
    "http://user:pw@8.8.8.8/hook", "http://8.8.8.8:99999/", "http://" + "a" * 2100,
])
def test_urls_that_are_not_plain_http_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_url(url, allow_private=True)
    assert refused.value.field == "webhook_url"  # type: ignore[attr-defined]


@pytest.mark.parametrize("host", [
    "127.0.0.1", "localhost", "10.1.2.3", "172.16.0.1", "192.168.1.10", "169.254.169.254",
    "100.64.0.1", "0.0.0.0", "224.0.0.1", "240.0.0.1", "[::1]", "[fe80::1]", "[fc00::1]",
    "[::ffff:127.0.0.1]", "[::ffff:10.0.0.1]", "[64:ff9b::a00:1]",
])
def test_private_and_reserved_addresses_are_refused(host: str) -> None:
    with pytest.raises(InvalidRequest, match="private or local"):
        check_url(f"http://{host}/hook", allow_private=False)
    assert check_url(f"http://{host}/hook", allow_private=True) == f"http://{host}/hook"


def test_public_addresses_are_accepted() -> None:
    assert check_url("https://8.8.8.8/hook?x=1", allow_private=False) == \
        "https://8.8.8.8/hook?x=1"
    assert check_url("http://[2606:4700::1111]:8443/h", allow_private=False)


def test_a_host_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="does not resolve"):
        check_url("https://no-such-host.invalid/hook", allow_private=False)


async def test_the_completion_hook_sends_the_track_of_jobs_that_asked_for_one(
        receiver: Callable[..., Receiver]) -> None:
    from tests.pages.test_links import job

    box = await receiver()
    webhooks = sender()
    made: list[int] = []

    async def secret_of(asked: Job) -> str | None:
        return SECRET

    async def payload_of(asked: Job, track: Track | None, context: object) -> dict[str, object]:
        made.append(asked.id)
        return {**TRACK, "id": asked.id}

    hook = completion_hook(webhooks, secret_of, payload_of)
    plain = job(None)
    await hook(plain, None, None)  # no webhook_url: nothing is sent
    asked = dataclasses.replace(plain, destination=dataclasses.replace(
        plain.destination, extra={"webhook_url": box.url}))
    await hook(asked, None, None)
    while not box.seen:
        await asyncio.sleep(0.01)
    await asyncio.gather(*webhooks._tasks)
    assert made == [plain.id] and json.loads(box.bodies[0])["id"] == plain.id
    assert verify(SECRET, box.seen[0].headers[SIGNATURE_HEADER], box.bodies[0])
