"""Prometheus metrics of one bot process, on its own registry (tests may build several apps).

Two kinds of source, so that neither the core nor the worker imports prometheus:

- **events**: :meth:`Metrics.on_event` is a :class:`bot.core.events.Notifier` listener; every
  job state change passes through it (terminal states, refunds, re-queues, latency);
- **scrape-time reads**: :meth:`Metrics.refresh` reads the queue from the database and the
  worker's and delivery stage's plain counters just before each ``/metrics`` answer.

Counters read at scrape time (audio seconds, delivery retries) are exported through a small
collector rather than ``Counter.inc`` so the worker and delivery keep one number each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.core.db import Database
from bot.core.models import EventKind, JobEvent, JobState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
QUEUE_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.RENDERED)
ENDED = {
    EventKind.DONE: "done", EventKind.UNDELIVERED: "undelivered",
    EventKind.FAILED: "failed", EventKind.CANCELLED: "cancelled",
}
"""Events that end a job, and the ``state`` label each gets."""
LATENCY_BUCKETS = (5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 3600)
"""Request → track posted, in seconds: a 10 s track takes seconds on a GPU, minutes queued."""


class WorkerView(Protocol):
    """What metrics read from the generation worker (``generation.worker.Worker``)."""

    @property
    def busy_slots(self) -> int: ...

    audio_seconds: float


class DeliveryView(Protocol):
    """What metrics read from the delivery stage (``bot.core.delivery.Delivery``)."""

    retries: int
    gave_up: int


class Metrics:
    """The process's metrics. Wire :meth:`on_event` to the notifier; call :meth:`render`."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        self.worker: WorkerView | None = None
        self.delivery: DeliveryView | None = None
        r = self.registry
        self.queue = Gauge("musicbot_jobs", "Jobs in the database by state (queue depth).",
                           ["state"], registry=r)
        self.slots = Gauge("musicbot_worker_busy_slots",
                           "Jobs this worker is generating or encoding now (batch occupancy).",
                           registry=r)
        self.ended = Counter("musicbot_jobs_ended", "Jobs that reached an end, by how.",
                             ["state"], registry=r)
        self.queued = Counter("musicbot_jobs_queued", "Jobs members asked for (charged).",
                              registry=r)
        self.requeued = Counter("musicbot_jobs_requeued", "Jobs put back in the queue.",
                                registry=r)
        self.refunds = Counter("musicbot_refunds", "Refunded jobs, by reason.", ["reason"],
                               registry=r)
        self.refunded_tokens = Counter("musicbot_refunded_tokens", "Tokens given back.",
                                       ["reason"], registry=r)
        self.latency = Histogram("musicbot_job_latency_seconds",
                                 "From the member's request to the track posted.",
                                 buckets=LATENCY_BUCKETS, registry=r)
        r.register(_ReadCounters(self))

    def on_event(self, event: JobEvent) -> None:
        """Notifier listener: count what a job's event says about it."""
        state = ENDED.get(event.kind)
        if event.kind is EventKind.QUEUED:
            self.queued.inc()
        elif event.kind is EventKind.REQUEUED:
            self.requeued.inc()
        if state is None:
            return
        self.ended.labels(state).inc()
        if event.refunded:
            self.refunds.labels(state).inc()
            self.refunded_tokens.labels(state).inc(event.refunded)
        if event.kind is EventKind.DONE:
            posted = event.job.delivered_at or self._clock()
            self.latency.observe(max(0.0, posted - event.job.created_at))

    async def refresh(self, db: Database) -> None:
        """Read the queue depth and the worker's occupancy now (before a scrape)."""
        marks = ",".join("?" * len(QUEUE_STATES))
        rows = await db.fetchall(
            f"SELECT state, COUNT(*) FROM jobs WHERE state IN ({marks}) GROUP BY state",
            [s.value for s in QUEUE_STATES])
        counts = {str(row[0]): int(row[1]) for row in rows}
        for state in QUEUE_STATES:
            self.queue.labels(state.value).set(counts.get(state.value, 0))
        self.slots.set(self.worker.busy_slots if self.worker is not None else 0)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _ReadCounters(Collector):
    """Counters kept as plain numbers by the worker and delivery, read at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        worker: Any = self._metrics.worker
        delivery: Any = self._metrics.delivery
        audio = CounterMetricFamily("musicbot_audio_seconds",
                                    "Seconds of music generated for members' jobs.")
        audio.add_metric([], worker.audio_seconds if worker is not None else 0.0)
        retries = CounterMetricFamily("musicbot_delivery_retries",
                                      "Failed uploads that will be tried again.")
        retries.add_metric([], delivery.retries if delivery is not None else 0)
        gave_up = CounterMetricFamily("musicbot_delivery_gave_up",
                                      "Tracks whose upload was given up (member told /track).")
        gave_up.add_metric([], delivery.gave_up if delivery is not None else 0)
        yield from (audio, retries, gave_up)
