"""A member whose frontend runs in another process than the worker still sees their job
start, progress, and fail with its refund: the relay reads the changes from the job rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.config import Config
from bot.core.models import EventKind
from bot.core.relay import EventRelay
from bot.core.service import MusicService

from .conftest import Clock, RecordingFrontend, member, order


async def two_processes(
    open_service: Callable[..., Any], config: Config
) -> tuple[MusicService, MusicService, EventRelay]:
    frontends = await open_service(config)
    worker = await open_service(config)
    worker.notifier.frontends.clear()  # `musicbot worker`: no chat connection
    relay = EventRelay(frontends.db, frontends.notifier, owner=frontends.owner, interval_s=2.5,
                       clock=frontends.settlement._clock)
    await relay.poll()  # the relay's first look only learns what is there
    return worker, frontends, relay


async def test_start_progress_and_failure_reach_the_member_from_another_process(
    open_service: Callable[..., Any], config: Config, frontend: RecordingFrontend, clock: Clock,
) -> None:
    worker, frontends, relay = await two_processes(open_service, config)
    await order(frontends, member())
    [job] = await worker.settlement.claim(1)
    await relay.poll()
    await worker.settlement.report_progress(job, 0.5)
    clock.advance(3)
    await relay.poll()
    await relay.poll()  # nothing new: nothing shown twice
    await worker.settlement.fail(job.id, "the model broke", retryable=True)
    clock.advance(3)
    await relay.poll()
    await frontends.drain_events()

    kinds = [e.kind for e in frontend.events if e.job.id == job.id]
    assert kinds == [EventKind.STARTED, EventKind.PROGRESS, EventKind.REQUEUED]
    progress = [e for e in frontend.events if e.kind is EventKind.PROGRESS]
    assert progress[0].progress == 0.5 and progress[0].eta_s is not None

    [again] = await worker.settlement.claim(1)
    await relay.poll()
    await worker.settlement.fail(again.id, "the model broke again")
    await relay.poll()
    await frontends.drain_events()
    last = [e for e in frontend.events if e.job.id == job.id][-2:]
    assert [e.kind for e in last] == [EventKind.STARTED, EventKind.FAILED]
    assert last[-1].refunded == job.price and "broke again" in last[-1].message


async def test_a_cancel_shown_here_is_not_shown_again_by_the_relay(
    open_service: Callable[..., Any], config: Config, frontend: RecordingFrontend,
) -> None:
    _, frontends, relay = await two_processes(open_service, config)
    receipt = await order(frontends, member())
    await frontends.cancel(member(), receipt.job.id)
    await relay.poll()
    await frontends.drain_events()
    cancels = [e for e in frontend.events if e.kind is EventKind.CANCELLED]
    assert len(cancels) == 1
