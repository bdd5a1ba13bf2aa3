"""The generation worker: one long-lived asyncio task that turns queued jobs into tracks.

It wakes on ``port.work_available`` or every ``generation.poll_s`` (so no wake-up depends on
one event being set at the right moment: a restart, another process's job), claims up to
``generation.max_batch`` compatible jobs under this process's lease (the core picks them
fairly and by ``batch_key``), runs ``Engine.generate`` for the whole batch in a dedicated
thread, forwards throttled progress to the event loop, encodes each result and hands it to
``port.rendered``. Its part ends there: delivery is the core's outbox, off the GPU path.

Every claimed job leaves :meth:`Worker._process` through exactly one of ``rendered``,
``fail``, ``release`` or ``finish_cancelled`` (the core does the refunds), and those calls are
shielded from task cancellation, so a shutdown cannot strand a charged job in ``running``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bot.config import Config
from bot.core.errors import MusicBotError
from bot.core.models import Job
from bot.core.ports import WorkerPort
from generation.audio import Audio, load_track, store_track
from generation.engine import Engine, GenerationRequest
from generation.errors import (
    GenerationError,
    GenerationOutOfMemory,
    GenerationStopped,
    TrackTooLarge,
)

log = logging.getLogger(__name__)

BATCH_REGROW_AFTER = 20
"""Clean batches after an out-of-memory split before the batch cap grows by one again."""

EngineSource = Mapping[str, Engine] | Callable[[str], Engine]


@dataclass
class _Control:
    """Shared between the event loop and the generating thread for one batch.

    ``should_stop`` runs on the generating thread at every decoding step; it records why it
    asked audiocraft to stop so the loop side can settle each job accordingly.
    """

    jobs: Sequence[Job]
    service: WorkerPort
    deadline: float
    shutdown: threading.Event
    reason: str | None = None
    cancelled: set[int] = field(default_factory=set)

    def should_stop(self) -> bool:
        if self.shutdown.is_set():
            self.reason = "shutdown"
        elif time.monotonic() > self.deadline:
            self.reason = "timeout"
        else:
            self.cancelled = {j.id for j in self.jobs if self.service.cancel_requested(j.id)}
            if self.cancelled:
                self.reason = "cancel"
        return self.reason is not None


class Worker:
    """Runs queued jobs through the engine(s) and reports back to the service.

    ``engines`` maps a catalogue key (``job.params.model``) to a loaded :class:`Engine`, or is
    a callable doing the same (it may raise :class:`GenerationError` for unknown models).
    ``platforms`` limits the jobs it claims to those platforms' members (the local console
    renders only its own jobs); None renders for everyone.
    Use :meth:`start`/:meth:`stop` in the app, or :meth:`run_until_idle` in tests and
    benchmarks (not both at once).
    """

    def __init__(
        self, service: WorkerPort, engines: EngineSource, config: Config, *,
        platforms: frozenset[str] | None = None,
    ) -> None:
        self.service = service
        self.engines = engines
        self.config = config
        self.platforms = platforms
        self._task: asyncio.Task[None] | None = None
        self._shutdown = threading.Event()
        self._wake = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._drain_lock = asyncio.Lock()
        self._progress_tasks: set[asyncio.Task[None]] = set()
        self.batch_limit = config.generation.max_batch
        """Current batch cap: halved on out-of-memory, grown back by one after
        ``BATCH_REGROW_AFTER`` clean batches (memory use may have been a passing peak)."""
        self._clean_batches = 0
        self.jobs_done = 0
        """Job attempts this worker ended (rendered, failed or cancelled; re-queues excluded)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the background loop (idempotent)."""
        if self._task is not None and not self._task.done():
            return
        self._shutdown.clear()
        self._wake.clear()
        self._task = asyncio.create_task(self._run(), name="generation-worker")
        log.info("generation worker started")

    async def stop(self) -> None:
        """Stop the loop. A generation in progress is abandoned and its jobs re-queued.

        A batch that already finished generating is still encoded and delivered first.
        """
        self._shutdown.set()
        self._wake.set()
        if self._task is not None:
            try:
                await self._task
            finally:
                self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def run_until_idle(self) -> int:
        """Process queued jobs until none is left; returns how many job attempts ended."""
        if not self.running:
            self._shutdown.clear()  # a stopped worker can still be drained by hand
        before = self.jobs_done
        await self._drain()
        await self._flush_progress()
        return self.jobs_done - before

    async def _run(self) -> None:
        while not self._shutdown.is_set():
            await self._wait_for_work()
            if self._shutdown.is_set():
                break
            try:
                await self._drain()
            except Exception:  # never let one bad batch kill the loop
                log.exception("generation worker loop error")
                await asyncio.sleep(1.0)

    async def _wait_for_work(self) -> None:
        """Until this process queues a job, shutdown, or the poll interval passes."""
        work = asyncio.ensure_future(self.service.work_available.wait())
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({work, wake}, timeout=self.config.generation.poll_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            work.cancel()
            wake.cancel()

    async def _drain(self) -> None:
        async with self._drain_lock:
            while not self._shutdown.is_set():
                # Clear before claiming: a job queued after the claim sets it again.
                self.service.work_available.clear()
                # A read first: an idle poll must not take the database's write lock.
                if not await self.service.has_queued():
                    return
                jobs = await self.service.claim(self.batch_limit, self.platforms)
                if not jobs:
                    return
                await self._process(jobs)

    # ------------------------------------------------------------------ one batch

    async def _process(self, jobs: list[Job]) -> None:
        """Generate, encode and settle one claimed batch."""
        try:
            engine = self._engine_for(jobs[0])
            requests = [await self._request(job) for job in jobs]
        except Exception as exc:
            if not isinstance(exc, MusicBotError):
                log.exception("preparing jobs %s failed", [j.id for j in jobs])
            message = exc.user_message if isinstance(exc, MusicBotError) else (
                "the bot could not prepare this job")
            await self._settle(self._fail_all(jobs, message, retryable=False))
            return
        control = _Control(jobs, self.service,
                           time.monotonic() + self.config.generation.job_timeout_s,
                           self._shutdown)
        started = time.perf_counter()
        try:
            audios = await self._generate(engine, requests, jobs, control)
        except GenerationStopped:
            await self._settle(self._after_stop(jobs, control))
            return
        except GenerationOutOfMemory:
            await self._settle(self._after_oom(jobs))
            return
        except GenerationError as exc:
            await self._settle(self._fail_all(jobs, exc.user_message, retryable=False))
            return
        except Exception:
            log.exception("generation of jobs %s crashed", [j.id for j in jobs])
            await self._settle(self._fail_all(jobs, "the music model hit an internal error",
                                              retryable=False))
            return
        await self._flush_progress()
        self._grow_batch_limit()
        wall = time.perf_counter() - started
        self.service.record_speed(jobs[0].params.duration, wall, len(jobs))
        await self._settle(asyncio.gather(*(
            self._store(job, audio, engine) for job, audio in zip(jobs, audios, strict=True)
        )))

    def _engine_for(self, job: Job) -> Engine:
        key = job.params.model
        if callable(self.engines):
            return self.engines(key)
        engine = self.engines.get(key)
        if engine is None:
            raise GenerationError(f"The model '{key}' is not loaded on this bot right now.")
        return engine

    async def _request(self, job: Job) -> GenerationRequest:
        """The engine request for a job; for an extension, with the previous track's audio."""
        params = job.params
        if params.continue_from is None:
            return GenerationRequest(params)
        source = await self.service.source_track(params.continue_from)
        if not source:
            raise GenerationError(f"Job #{params.continue_from} has no stored track to extend.")
        previous = await asyncio.to_thread(load_track, source)
        # The stored track ends in our fade-out; continue from the audio before the fade and
        # generate that much more, so the member gets the seconds they paid for.
        faded = min(self.config.audio.fade_out_s, previous.duration_s / 2)
        keep = previous.samples.shape[-1] - int(faded * previous.sample_rate)
        previous = Audio(previous.samples[:, :keep], previous.sample_rate)
        return GenerationRequest(params, continue_audio=previous,
                                 duration_s=params.duration + faded)

    async def _generate(
        self, engine: Engine, requests: list[GenerationRequest], jobs: list[Job],
        control: _Control,
    ) -> list[Audio]:
        loop = asyncio.get_running_loop()
        on_progress = self._progress_forwarder(loop, jobs)
        if self._executor is None:
            # One thread: the model serves one call at a time anyway, and a dedicated
            # thread keeps encodes (default executor) from queueing behind it.
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="musicgen")
        return await loop.run_in_executor(
            self._executor, engine.generate, requests, on_progress, control.should_stop
        )

    def _progress_forwarder(
        self, loop: asyncio.AbstractEventLoop, jobs: list[Job]
    ) -> Callable[[float], None]:
        """A thread-side callback that posts at most one progress update per interval."""
        interval = self.config.generation.progress_interval_s
        last = [float("-inf")]

        def forward(fraction: float) -> None:
            now = time.monotonic()
            if now - last[0] < interval and fraction < 1.0:
                return
            last[0] = now
            loop.call_soon_threadsafe(self._post_progress, jobs, fraction)

        return forward

    def _post_progress(self, jobs: list[Job], fraction: float) -> None:
        for job in jobs:
            task = asyncio.create_task(self.service.report_progress(job, fraction))
            self._progress_tasks.add(task)
            task.add_done_callback(self._progress_tasks.discard)

    async def _flush_progress(self) -> None:
        """Let queued progress reports land before a job's final event (keeps them ordered)."""
        await asyncio.sleep(0)  # run callbacks posted from the thread just before it returned
        if self._progress_tasks:
            await asyncio.gather(*list(self._progress_tasks), return_exceptions=True)

    async def _store(self, job: Job, audio: Audio, engine: Engine) -> None:
        try:
            track = await store_track(audio, job.id, job.params.format,
                                      job.destination.upload_limit, self.config,
                                      noise=engine.noise)
        except TrackTooLarge as exc:
            await self._count(self.service.fail(job.id, exc.user_message, retryable=False))
            return
        except Exception:
            log.exception("encoding job %d failed", job.id)
            await self._count(self.service.fail(job.id, "the audio could not be encoded"))
            return
        await self._count(self.service.rendered(job, track))

    # ------------------------------------------------------------------ settling

    async def _after_stop(self, jobs: list[Job], control: _Control) -> None:
        await self._flush_progress()
        if control.reason == "timeout":
            limit = self.config.generation.job_timeout_s
            await self._fail_all(jobs, f"it took longer than the {limit:g} s limit",
                                 retryable=True)
            return
        cancelled = [j for j in jobs if j.id in control.cancelled]
        for job in cancelled:
            await self._count(self.service.finish_cancelled(job.id))
        others = [j.id for j in jobs if j.id not in control.cancelled]
        if others:
            # Batch-mates of a cancelled job, or everything on shutdown: back in the queue,
            # no attempt used, nothing charged or refunded.
            await self.service.release(others)

    async def _after_oom(self, jobs: list[Job]) -> None:
        await self._flush_progress()
        if len(jobs) == 1:
            await self._fail_all(jobs, "the model ran out of memory", retryable=False)
            return
        half = len(jobs) // 2
        # Remember the smaller size, or the next claim would take the same big batch again.
        self.batch_limit = max(1, min(self.batch_limit, half))
        self._clean_batches = 0
        first, rest = jobs[:half], jobs[half:]
        log.warning("out of memory with %d jobs; retrying %d, re-queueing %d",
                    len(jobs), len(first), len(rest))
        await self.service.release([j.id for j in rest])
        await self._process(first)

    def _grow_batch_limit(self) -> None:
        self._clean_batches += 1
        if self._clean_batches >= BATCH_REGROW_AFTER:
            self._clean_batches = 0
            self.batch_limit = min(self.config.generation.max_batch, self.batch_limit + 1)

    async def _fail_all(self, jobs: Sequence[Job], message: str, *, retryable: bool) -> None:
        for job in jobs:
            await self._count(self.service.fail(job.id, message, retryable=retryable))

    async def _count(self, settled: Awaitable[Job]) -> None:
        await settled
        self.jobs_done += 1

    @staticmethod
    async def _settle(work: Awaitable[object]) -> None:
        """Run the bookkeeping to the end even if our task is cancelled meanwhile."""
        await asyncio.shield(asyncio.ensure_future(work))
