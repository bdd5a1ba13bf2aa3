"""The generation worker: one long-lived asyncio task that turns queued jobs into tracks.

Continuous batching: each loaded model has a :class:`~generation.batcher.ContinuousBatcher`
with ``generation.max_batch`` slots. Whenever a slot is free the worker claims that many
queued jobs of that model (any length, sampling settings, extensions) under this process's
lease and submits them; the batcher's decode thread advances every running job by one step at
a time, and a finished job's slot goes to the next one at the next step. Each job is then
encoded and handed to ``port.rendered`` on its own, as soon as it is done; delivery is the
core's outbox, off the GPU path.

The worker wakes on ``port.work_available``, when a job ends, or every ``generation.poll_s``
(so no wake-up depends on one event being set at the right moment). Every claimed job leaves
:meth:`Worker._run_job` through exactly one of ``rendered``, ``fail``, ``release`` or
``finish_cancelled`` (the core does the refunds), shielded from task cancellation, so a
shutdown cannot strand a charged job in ``running``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from bot.config import Config
from bot.core import faults
from bot.core.errors import MusicBotError
from bot.core.models import GenerationParams, Job, JobKind
from bot.core.ports import WorkerPort
from generation.audio import (
    Audio,
    finish_threads,
    load_track,
    store_track,
    warm_up_finishing,
)
from generation.batcher import ContinuousBatcher
from generation.engine import Engine, GenerationRequest
from generation.errors import (
    GenerationError,
    GenerationOutOfMemory,
    GenerationStopped,
    TrackTooLarge,
)
from generation.stems import StemsLane

log = logging.getLogger(__name__)

SLOTS_REGROW_AFTER = 20
"""Clean jobs after an out-of-memory before a model's slot cap grows by one again."""



@dataclass
class _Stop:
    """Why a job's generation should end now; read on the decode thread at every step."""

    job_id: int
    port: WorkerPort
    deadline: float
    shutdown: asyncio.Event
    reason: str | None = None

    def __call__(self) -> bool:
        if self.shutdown.is_set():
            self.reason = "shutdown"
        elif time.monotonic() > self.deadline:
            self.reason = "timeout"
        elif self.port.cancel_requested(self.job_id):
            self.reason = "cancel"
        return self.reason is not None


class Worker:
    """Runs queued jobs through continuous batchers and reports back to the core.

    ``engines`` maps a catalogue key (``job.params.model``) to a loaded :class:`Engine`; a
    queued job for any other model is failed and refunded (see ``_refuse_unloaded``).
    ``platforms`` limits the jobs it claims to those platforms' members (the local console
    renders only its own jobs); None renders for everyone.
    Use :meth:`start`/:meth:`stop` in the app, or :meth:`run_until_idle` in tests and
    benchmarks (not both at once).
    """

    def __init__(
        self, service: WorkerPort, engines: Mapping[str, Engine], config: Config, *,
        platforms: frozenset[str] | None = None, stems: StemsLane | None = None,
    ) -> None:
        self.service = service
        self.engines = engines
        self.stems = stems
        """The stems lane (Demucs on its own thread), or None: this worker makes no stems."""
        self.config = config
        self.platforms = platforms
        self._batchers: dict[str, ContinuousBatcher | OneAtATime] = {}
        self._running: dict[int, asyncio.Task[None]] = {}
        self._alone: dict[str, int] = {}
        """Model key → the suspect job (one that was running at a crash) it runs by itself."""
        self._slot_cap: dict[str, int] = {}
        self._clean: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._shutdown = asyncio.Event()
        self._changed = asyncio.Event()
        self._progress_tasks: set[asyncio.Task[None]] = set()
        self._finishing: ThreadPoolExecutor | None = None
        """Threads that finish rendered tracks: a few, not the loop's default pool (a whole
        batch ends at once, and one thread per track took the GIL from the event loop)."""
        self.jobs_done = 0
        """Job attempts this worker ended (rendered, failed or cancelled; re-queues excluded)."""
        self.audio_seconds = 0.0
        """Seconds of new audio generated for members' jobs (warm-up excluded; for metrics)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the background loop (idempotent)."""
        if self._task is not None and not self._task.done():
            return
        self._shutdown.clear()
        self._finishing = ThreadPoolExecutor(max_workers=finish_threads(self.config),
                                             thread_name_prefix="finish")
        self._task = asyncio.create_task(self._run(), name="generation-worker")
        log.info("generation worker started")

    async def stop(self) -> None:
        """Stop: generations in progress are abandoned and their jobs re-queued (no attempt
        spent); a job whose generation already finished is still encoded and rendered."""
        self._shutdown.set()
        self._changed.set()
        if self._task is not None:
            try:
                await self._task
            finally:
                self._task = None
        await self._drain_running()
        if self._finishing is not None:
            await asyncio.to_thread(self._finishing.shutdown)
            self._finishing = None
        for batcher in self._batchers.values():
            await asyncio.to_thread(batcher.close)
        self._batchers.clear()
        if self.stems is not None:
            await asyncio.to_thread(self.stems.close)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def busy_slots(self) -> int:
        """Jobs claimed and not yet settled, across all models (slot occupancy)."""
        return len(self._running)

    async def run_until_idle(self) -> int:
        """Process queued jobs until none is left; returns how many job attempts ended."""
        if not self.running:
            self._shutdown.clear()  # a stopped worker can still be drained by hand
        before = self.jobs_done
        while True:
            busy = bool(self._running)  # read first: a job may end while _fill awaits
            claimed = await self._fill()
            if not claimed and not busy and not self._running:
                break
            if not claimed:
                await self._wait_for_change(timeout=None)
        await self._flush_progress()
        return self.jobs_done - before

    async def warm_up(self) -> None:
        """Make short tracks per model before members wait for one: the first call's kernel
        set-up is paid here (no cold start), and the ETA gets measured speeds for one job
        alone and for a full batch. Finishing a track (analysis, encoding) is warmed too."""
        await asyncio.to_thread(warm_up_finishing, self.config)
        for key, engine in self.engines.items():
            batcher = self._batcher(key, engine)
            for batch in sorted({1, batcher.free_slots or 1}):
                requests = [GenerationRequest(GenerationParams("warm-up", 1.0, key, seed))
                            for seed in range(batch)]
                started = time.perf_counter()
                await asyncio.gather(*(asyncio.wrap_future(batcher.submit(r))
                                       for r in requests))
                self.service.record_speed(1.0, time.perf_counter() - started, batch)

    async def _run(self) -> None:
        while not self._shutdown.is_set():
            try:
                claimed = await self._fill()
            except Exception:  # never let one bad claim kill the loop
                log.exception("generation worker loop error")
                claimed = 0
            if not claimed:
                await self._wait_for_change(timeout=self.config.generation.poll_s)

    async def _wait_for_change(self, timeout: float | None) -> None:
        """Until a job ends, this process queues one, shutdown, or ``timeout``."""
        work = asyncio.ensure_future(self.service.work_available.wait())
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({work, changed}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            work.cancel()
            changed.cancel()
        self._changed.clear()

    # ------------------------------------------------------------------ claiming

    async def _fill(self) -> int:
        """Claim jobs for every free slot of every loaded model; returns how many."""
        if self._shutdown.is_set():
            return 0
        self.service.work_available.clear()  # before the read: a later queue sets it again
        if not await self.service.has_queued():
            return 0
        claimed = 0
        for key, engine in self.engines.items():
            free = self._free_slots(key, engine)
            if free > 0:
                jobs = await self.service.claim(free, self.platforms, batch_key=key,
                                                alone=not self._running_of(key))
                self._launch(jobs, key)
                claimed += len(jobs)
        claimed += await self._fill_stems()
        return claimed + await self._refuse_unloaded()

    async def _refuse_unloaded(self) -> int:
        """A queued job for a model this bot has not loaded (the config changed since it was
        queued) would wait forever: claim it and let it fail with a refund."""
        served = (*self.engines, *((self.stems.batch_key,) if self.stems else ()))
        if not await self.service.has_queued(exclude=served):
            return 0  # the usual case: a read, not a claim transaction on every poll
        jobs = await self.service.claim(1, self.platforms, exclude=served)
        for job in jobs:
            if job.kind != JobKind.MUSIC:  # never hand a stems job to a music model
                self._running[job.id] = asyncio.create_task(
                    self._refuse(job, "Stems are not available on this bot right now."),
                    name=job.batch_key)
                continue
            self._running[job.id] = asyncio.create_task(
                self._run_job(job, job.params.model), name=job.params.model)
        return len(jobs)

    def _launch(self, jobs: list[Job], key: str) -> None:
        for job in jobs:
            if job.crashes:
                self._alone[key] = job.id
            self._running[job.id] = asyncio.create_task(self._run_job(job, key), name=key)

    def _free_slots(self, key: str, engine: Engine) -> int:
        if key in self._alone:
            return 0  # a suspect job runs by itself
        batcher = self._batcher(key, engine)
        cap = self._slot_cap.get(key, self.config.generation.max_batch)
        return min(batcher.free_slots, cap - len(self._running_of(key)))

    def _running_of(self, key: str) -> list[int]:
        return [job_id for job_id, task in self._running.items() if task.get_name() == key]

    def _batcher(self, key: str, engine: Engine) -> ContinuousBatcher | OneAtATime:
        batcher = self._batchers.get(key)
        if batcher is None:
            try:
                batcher = ContinuousBatcher(engine, slots=self.config.generation.max_batch,
                                            kv_budget_mib=_kv_budget(self.config, engine))
            except GenerationError as exc:  # an architecture our decode loop does not run
                log.warning("%s: %s; its jobs run one at a time", key, exc.user_message)
                batcher = OneAtATime(engine)
            self._batchers[key] = batcher
        return batcher

    # ------------------------------------------------------------------ stems lane

    async def _fill_stems(self) -> int:
        """Claim one stems job when the stems lane is idle (one separation at a time)."""
        if self.stems is None or self._running_of(self.stems.batch_key):
            return 0
        key = self.stems.batch_key
        if not await self.service.has_queued(only=key):
            return 0  # the usual case: a read, not a claim ranking the queue at every fill
        jobs = await self.service.claim(1, self.platforms, batch_key=key, alone=True)
        for job in jobs:
            self._running[job.id] = asyncio.create_task(self._run_stems(job), name=key)
        return len(jobs)

    async def _run_stems(self, job: Job) -> None:
        try:
            await self._settle(self._split_and_store(job))
        finally:
            self._running.pop(job.id, None)
            self._changed.set()

    async def _split_and_store(self, job: Job) -> None:
        """Separate the source track and commit the stems; every way out settles the job."""
        assert self.stems is not None
        stop = _Stop(job.id, self.service, time.monotonic() + self.config.generation.job_timeout_s,
                     self._shutdown)
        try:
            if job.source_job_id is None:
                raise GenerationError("This stems job names no track to split.")
            source = await self.service.source_track(job.source_job_id) or ""
            track = await self.stems.render(
                job.id, source, job.params.format, job.destination.upload_limit,
                should_stop=stop,
                on_progress=self._progress_forwarder(asyncio.get_running_loop(), job))
        except GenerationStopped:
            await self._after_stop(job, stop)
            return
        except GenerationOutOfMemory:
            await self._count(self.service.fail(job.id, "the stems model ran out of memory"))
            return
        except MusicBotError as exc:  # a gone source, a stem too large to upload
            await self._count(self.service.fail(job.id, exc.user_message, retryable=False))
            return
        except Exception:
            log.exception("stems of job %d crashed", job.id)
            await self._count(self.service.fail(job.id, "the stems model hit an internal error"))
            return
        await self._flush_progress()
        await self._count(self.service.rendered(job, track))

    async def _refuse(self, job: Job, message: str) -> None:
        try:
            await self._settle(self._count(self.service.fail(job.id, message)))
        finally:
            self._running.pop(job.id, None)
            self._changed.set()

    # ------------------------------------------------------------------ one job

    async def _run_job(self, job: Job, key: str) -> None:
        try:
            await self._settle(self._generate_and_store(job, key))
        finally:
            self._running.pop(job.id, None)
            if self._alone.get(key) == job.id:
                del self._alone[key]
            self._changed.set()

    async def _generate_and_store(self, job: Job, key: str) -> None:
        try:
            engine = self._engine_for(key)
            request = await self._request(job)
        except Exception as exc:
            if not isinstance(exc, MusicBotError):
                log.exception("preparing job %d failed", job.id)
            message = exc.user_message if isinstance(exc, MusicBotError) else (
                "the bot could not prepare this job")
            await self._count(self.service.fail(job.id, message, retryable=False))
            return
        stop = _Stop(job.id, self.service, time.monotonic() + self.config.generation.job_timeout_s,
                     self._shutdown)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            faults.trace("render-begin", job.id)  # the model works on it from here...
            future = self._batcher(key, engine).submit(
                request, on_progress=self._progress_forwarder(loop, job), should_stop=stop)
            future.add_done_callback(lambda _: faults.trace("render-end", job.id))  # ...to here
            audio = await asyncio.wrap_future(future)
        except GenerationStopped:
            await self._after_stop(job, stop)
            return
        except GenerationOutOfMemory:
            await self._after_oom(job, key)
            return
        except GenerationError as exc:
            await self._count(self.service.fail(job.id, exc.user_message, retryable=False))
            return
        except Exception:
            log.exception("generation of job %d crashed", job.id)
            await self._count(self.service.fail(job.id, "the music model hit an internal error"))
            return
        self._grow_slots(key)
        self.audio_seconds += request.new_seconds
        self.service.record_speed(request.new_seconds, time.perf_counter() - started,
                                  max(1, len(self._running_of(key))))
        await self._flush_progress()
        await self._store(job, audio, engine)

    def _engine_for(self, key: str) -> Engine:
        engine = self.engines.get(key)
        if engine is None:
            raise GenerationError(f"The model '{key}' is not loaded on this bot right now.")
        return engine

    async def _request(self, job: Job) -> GenerationRequest:
        """The engine request for a job; for an extension, with the previous track's audio."""
        params = job.params
        if params.continue_from is None:
            return await clip_request(params, self.service.clip_file)
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

    def _progress_forwarder(
        self, loop: asyncio.AbstractEventLoop, job: Job
    ) -> Callable[[float], None]:
        """A decode-thread callback that posts at most one progress update per interval."""
        interval = self.config.generation.progress_interval_s
        last = [float("-inf")]

        def forward(fraction: float) -> None:
            now = time.monotonic()
            if now - last[0] < interval and fraction < 1.0:
                return
            last[0] = now
            loop.call_soon_threadsafe(self._post_progress, job, fraction)

        return forward

    def _post_progress(self, job: Job, fraction: float) -> None:
        task = asyncio.create_task(self.service.report_progress(job, fraction))
        self._progress_tasks.add(task)
        task.add_done_callback(self._progress_tasks.discard)

    async def _flush_progress(self) -> None:
        """Let queued progress reports land before a job's final event (keeps them ordered)."""
        await asyncio.sleep(0)  # run callbacks posted from the thread just before it returned
        if self._progress_tasks:
            await asyncio.gather(*list(self._progress_tasks), return_exceptions=True)

    async def _store(self, job: Job, audio: Audio, engine: Engine) -> None:
        # The same except-ladder shape as _generate_and_store: each stage maps its own errors
        # to the member's message (`duplicates` lists the pair by shape only).
        try:
            track = await store_track(audio, job.id, job.params.format,
                                      job.destination.upload_limit, self.config,
                                      noise=engine.noise, executor=self._finishing)
        except TrackTooLarge as exc:
            await self._count(self.service.fail(job.id, exc.user_message, retryable=False))
            return
        except Exception:
            log.exception("encoding job %d failed", job.id)
            await self._count(self.service.fail(job.id, "the audio could not be encoded"))
            return
        await self._count(self.service.rendered(job, track))

    # ------------------------------------------------------------------ settling

    async def _after_stop(self, job: Job, stop: _Stop) -> None:
        await self._flush_progress()
        if stop.reason == "timeout":
            limit = self.config.generation.job_timeout_s
            await self._count(self.service.fail(
                job.id, f"it took longer than the {limit:g} s limit", retryable=True))
        elif stop.reason == "cancel":
            await self._count(self.service.finish_cancelled(job.id))
        else:  # shutdown: back in the queue, no attempt used, nothing charged or refunded
            await self.service.release([job.id])

    async def _after_oom(self, job: Job, key: str) -> None:
        """Out of memory: a job that shared the batch goes back to the queue and the model's
        slot cap halves; a job alone fails (it cannot fit at all)."""
        await self._flush_progress()
        mates = len(self._running_of(key))
        if mates <= 1:
            await self._count(self.service.fail(job.id, "the model ran out of memory",
                                                retryable=False))
            return
        cap = self._slot_cap.get(key, self.config.generation.max_batch)
        self._slot_cap[key] = max(1, min(cap, mates) // 2)
        self._clean[key] = 0
        log.warning("out of memory with %d jobs of %s; slots now %d", mates, key,
                    self._slot_cap[key])
        await self.service.release([job.id])

    def _grow_slots(self, key: str) -> None:
        if key not in self._slot_cap:
            return
        self._clean[key] = self._clean.get(key, 0) + 1
        if self._clean[key] >= SLOTS_REGROW_AFTER:
            self._clean[key] = 0
            self._slot_cap[key] += 1
            if self._slot_cap[key] >= self.config.generation.max_batch:
                del self._slot_cap[key]

    async def _drain_running(self) -> None:
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)
        await self._flush_progress()

    async def _count(self, settled: Awaitable[Job]) -> None:
        await settled
        self.jobs_done += 1

    @staticmethod
    async def _settle(work: Awaitable[object]) -> None:
        """Run the bookkeeping to the end even if our task is cancelled meanwhile."""
        await asyncio.shield(asyncio.ensure_future(work))


async def clip_request(
    params: GenerationParams, locate: Callable[[str], Awaitable[str | None]] | None = None
) -> GenerationRequest:
    """A request with the member's stored clips: one to continue, or a melody to follow.

    ``locate`` finds a clip on this machine (the track store's copy when the frontends
    process that took it runs elsewhere); without it the recorded path is read as it is.
    """
    clip = melody = None
    if params.audio_prompt:
        clip = await _load_clip(params.audio_prompt, locate)
    if params.melody_prompt:
        melody = await _load_clip(params.melody_prompt, locate)
    return GenerationRequest(params, continue_audio=clip, melody_audio=melody)


async def _load_clip(recorded: str,
                     locate: Callable[[str], Awaitable[str | None]] | None) -> Audio:
    path = await locate(recorded) if locate is not None else recorded
    if path is None or not os.path.isfile(path):
        raise GenerationError("The audio clip is no longer stored; attach it again.")
    return await asyncio.to_thread(load_track, path)


class OneAtATime:
    """audiocraft's own ``generate`` for models the continuous batcher refuses (melody
    conditioning, other attention variants): one job at a time, same interface."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.mean_occupancy = 1.0
        self._busy = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="musicgen")

    @property
    def free_slots(self) -> int:
        with self._lock:
            return 0 if self._busy else 1

    def submit(
        self, request: GenerationRequest, *, on_progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Future[Audio]:
        with self._lock:
            self._busy += 1
        future = self._executor.submit(self._generate, request, on_progress, should_stop)
        future.add_done_callback(self._done)
        return future

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def _generate(self, request: GenerationRequest, on_progress: Callable[[float], None] | None,
                  should_stop: Callable[[], bool] | None) -> Audio:
        return self.engine.generate([request], on_progress, should_stop)[0]

    def _done(self, _future: Future[Audio]) -> None:
        with self._lock:
            self._busy -= 1


def _kv_budget(config: Config, engine: Engine) -> float | None:
    """``generation.kv_budget_mib``, or automatic: half the GPU's free memory, none on CPU."""
    if config.generation.kv_budget_mib > 0:
        return config.generation.kv_budget_mib
    if engine.device.startswith("cuda") and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(torch.device(engine.device))
        return free / 2 / (1024 * 1024)
    return None
