"""Continuous batching: one decode thread advances every running job by one step at a time.

Jobs of any length and sampling settings share the batch. A job that finishes, is stopped or
fails leaves its slot at once; a waiting job joins at the next step (its conditioning and
prompt are prepared then). A track longer than the model's window re-primes its slot with its
own tail, as audiocraft's sliding window does. Admission is by slot count and, when
``kv_budget_mib`` is set, by the attention-cache bytes each job needs (strict FIFO: a job that
does not fit yet waits, and the ones behind it wait too, so long tracks are never starved).

The Future of a request resolves to the same :class:`~generation.audio.Audio` that
``Engine.generate`` returns for it (see ``docs/performance.md`` for the design).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from generation.audio import Audio
from generation.decode import CrossKV, Sampling, Slot, SlotDecoder, make_generator, steps_of
from generation.engine import CONTEXT_S, MAX_TOTAL_S, Engine, GenerationRequest
from generation.errors import GenerationError, GenerationOutOfMemory, GenerationStopped
from generation.priority import yield_cpu_to_the_loop
from generation.progress import safe_duration, windows

log = logging.getLogger(__name__)

MIB = 1024 * 1024


@dataclass(eq=False)
class _Job:
    """A submitted request and, once admitted, its decoding state."""

    request: GenerationRequest
    future: Future[Audio]
    on_progress: Callable[[float], None] | None
    should_stop: Callable[[], bool] | None
    reserved: int
    """Bytes of attention cache admission counts for this job (an upper bound)."""
    plan: list[tuple[int, int]] = field(default_factory=list)
    window: int = 0
    pieces: list[torch.Tensor] = field(default_factory=list)
    tail_s: float = 0.0
    cross: CrossKV | None = None
    generator: torch.Generator | None = None
    slot: Slot | None = None
    steps_done: int = 0
    steps_total: int = 1
    started: bool = False

    def stopped(self) -> bool:
        return self.should_stop is not None and bool(self.should_stop())


class ContinuousBatcher:
    """Decode many jobs at once on one engine's model; thread-safe :meth:`submit`.

    ``slots`` caps how many jobs decode together; ``kv_budget_mib`` (``None``: no cap) caps
    the attention-cache memory they may hold, so the batch size adapts to the job lengths.
    """

    def __init__(self, engine: Engine, *, slots: int, kv_budget_mib: float | None) -> None:
        if slots < 1:
            raise GenerationError("The batcher needs at least one slot.")
        self.engine = engine
        self.slots = slots
        self.budget = None if kv_budget_mib is None else int(kv_budget_mib * MIB)
        self.decoder = SlotDecoder(engine.model)
        self.spec = self.decoder.spec
        self.steps = 0
        """Batched forward passes run so far (for occupancy statistics)."""
        self.slot_steps = 0
        """Sum over those passes of the slots they advanced."""
        self._waiting: deque[_Job] = deque()
        self._active: list[_Job] = []
        self._reserved = 0
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="musicgen-decode", daemon=True)
        self._thread.start()

    # -- public API ----------------------------------------------------------------------------
    def submit(
        self,
        request: GenerationRequest,
        *,
        on_progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Future[Audio]:
        """Queue ``request``; the Future resolves to its audio or raises a GenerationError.

        A request that can never fit (too long, or over the memory budget even alone) fails
        at once and changes nothing.
        """
        future: Future[Audio] = Future()
        try:
            reserved = self._bytes_for(request)
        except GenerationError as exc:
            future.set_exception(exc)
            return future
        job = _Job(request, future, on_progress, should_stop, reserved)
        with self._cond:
            if self._closed:
                future.set_exception(GenerationError("The music generator has shut down."))
                return future
            self._waiting.append(job)
            self._cond.notify_all()
        return future

    @property
    def free_slots(self) -> int:
        """How many more jobs it would start now (slots left, and budget for a short job)."""
        with self._cond:
            free = self.slots - len(self._active) - len(self._waiting)
            if self.budget is not None:
                smallest = self.spec.kv_bytes(1)
                free = min(free, (self.budget - self._reserved) // smallest - len(self._waiting))
            return max(0, free)

    @property
    def mean_occupancy(self) -> float:
        """Mean number of slots each batched step advanced."""
        return self.slot_steps / self.steps if self.steps else 0.0

    def close(self) -> None:
        """Stop the decode thread; running and waiting jobs fail with a GenerationError."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:  # a callback may close us
            self._thread.join()

    # -- admission -----------------------------------------------------------------------------
    def _bytes_for(self, request: GenerationRequest) -> int:
        """Upper bound of the cache bytes ``request`` holds at once (its longest window)."""
        new_s = request.new_seconds
        if not 0 < new_s <= MAX_TOTAL_S:
            raise GenerationError(f"Tracks can be at most {MAX_TOTAL_S:g} s long.")
        tail_s = 0.0
        if request.continue_audio is not None:
            tail_s = min(CONTEXT_S, request.continue_audio.duration_s)
        fr = self.engine.model.frame_rate
        window = int(self.engine.max_duration * fr)
        frames = min(window, math.ceil((tail_s + new_s) * fr) + 2)
        needed = self.spec.kv_bytes(frames)
        if self.budget is not None and needed > self.budget:
            raise GenerationError(
                f"This track needs {needed / MIB:.1f} MiB of attention cache, over the "
                f"{self.budget / MIB:.1f} MiB budget (generation.kv_budget_mib); ask for a "
                "shorter one."
            )
        return needed

    def _admit_locked(self) -> list[_Job]:
        """Move waiting jobs into free slots while the budget allows (FIFO)."""
        admitted = []
        while self._waiting and len(self._active) < self.slots:
            job = self._waiting[0]
            if self.budget is not None and self._reserved + job.reserved > self.budget:
                break
            self._waiting.popleft()
            if not job.future.set_running_or_notify_cancel():
                continue  # the caller cancelled the Future itself
            self._active.append(job)
            self._reserved += job.reserved
            admitted.append(job)
        return admitted

    def _release(self, job: _Job) -> None:
        with self._cond:
            if job in self._active:
                self._active.remove(job)
                self._reserved -= job.reserved
        job.slot = None  # drop the cache now, not when the Future is collected

    # -- the decode thread ---------------------------------------------------------------------
    def _run(self) -> None:
        yield_cpu_to_the_loop()
        with torch.inference_mode():
            while self._iterate():
                pass
        self._fail_everything(GenerationError("The music generator has shut down."))

    def _iterate(self) -> bool:
        """Admit, stop, step, finish; False once closed."""
        with self._cond:
            while not self._closed and not self._active and not self._waiting:
                self._cond.wait()
            if self._closed:
                return False
            self._drop_stopped_waiting_locked()
            admitted = self._admit_locked()
        # One model user at a time: Engine.generate (the old path) holds the same lock.
        with self.engine._lock:
            for job in admitted:
                self._guard(job, self._start)
            for job in list(self._active):
                self._guard(job, self._check_stop)
            self._step()
        if not admitted and not self._active:
            # Nothing fits and nothing runs (cannot happen with a sane budget): wait a bit.
            with self._cond:
                self._cond.wait(0.05)
        return True

    def _drop_stopped_waiting_locked(self) -> None:
        for job in [j for j in self._waiting if j.stopped()]:
            self._waiting.remove(job)
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(GenerationStopped())

    def _guard(self, job: _Job, action: Callable[[_Job], None]) -> None:
        """Run ``action(job)``; anything it raises fails that job only and frees its slot."""
        try:
            action(job)
        except BaseException as exc:
            self._fail(job, exc)

    def _fail(self, job: _Job, exc: BaseException) -> None:
        if isinstance(exc, torch.OutOfMemoryError):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            exc = GenerationOutOfMemory(1)
        self._release(job)
        if not job.future.done():
            job.future.set_exception(exc)

    def _start(self, job: _Job) -> None:
        """Prepare conditioning, prompt and window plan, and open the first window."""
        engine, model, request = self.engine, self.engine.model, job.request
        if request.melody_audio is not None:
            raise GenerationError(f"The model {engine.source} cannot follow a melody.")
        new_s = request.new_seconds
        prompt_wav, tail_s = engine._continuation_prompt([request], new_s)
        fr = model.frame_rate
        prompt_frames = round(tail_s * fr) if prompt_wav is not None else 0
        total_s = safe_duration(tail_s + new_s, engine.max_duration, engine.extend_stride_s,
                                fr, prompt_frames)
        with engine._conv_flags():
            attributes, prompt = model._prepare_tokens_and_attributes(
                [request.params.text], prompt_wav)
        first_prompt = None if prompt is None else prompt[0]
        prompt_len = 0 if first_prompt is None else int(first_prompt.shape[-1])
        job.tail_s = tail_s
        job.plan = windows(total_s, engine.max_duration, engine.extend_stride_s, fr, prompt_len)
        job.steps_total = steps_of(job.plan, self.spec)
        if first_prompt is not None:
            job.pieces.append(first_prompt)
        job.cross = self.decoder.condition(attributes[0])
        job.generator = make_generator(request.params.seed, self.spec.device)
        self._open_window(job, first_prompt)

    def _open_window(self, job: _Job, prompt: torch.Tensor | None) -> None:
        frames, _ = job.plan[job.window]
        old_cache = job.slot.cache if job.slot is not None else None
        self._first_step(job)
        assert job.cross is not None and job.generator is not None
        job.slot = self.decoder.open(job.cross, _sampling(job.request), job.generator, frames,
                                     prompt, cache=old_cache)
        if job.slot.pos:  # the prompt was prefilled: one forward pass for this job
            self._progress(job)

    def _first_step(self, job: _Job) -> None:
        if not job.started:
            job.started = True
            if self.engine.fault_hook is not None:
                self.engine.fault_hook([job.request])

    def _check_stop(self, job: _Job) -> None:
        if job.stopped():
            self._fail(job, GenerationStopped())

    def _step(self) -> None:
        jobs = [j for j in self._active if j.slot is not None and not j.slot.done]
        if not jobs:
            return
        try:
            self.decoder.step([j.slot for j in jobs])  # type: ignore[misc]
        except BaseException as exc:
            if isinstance(exc, torch.OutOfMemoryError):
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                exc = GenerationOutOfMemory(len(jobs))
            for job in jobs:
                self._fail(job, exc)
            return
        self.steps += 1
        self.slot_steps += len(jobs)
        for job in jobs:
            self._guard(job, self._after_step)

    def _after_step(self, job: _Job) -> None:
        self._progress(job)
        assert job.slot is not None
        if job.slot.done:
            self._end_window(job)

    def _progress(self, job: _Job) -> None:
        job.steps_done += 1
        if job.on_progress is not None:
            # Decoding the tokens to audio still follows: never report 100% here.
            job.on_progress(min(job.steps_done / job.steps_total, 0.99))

    def _end_window(self, job: _Job) -> None:
        """Keep the window's new frames; re-prime with its tail, or finish the job."""
        assert job.slot is not None
        codes = job.slot.codes()
        prompt_len = job.plan[job.window][1]
        job.pieces.append(codes[:, prompt_len:])
        job.window += 1
        if job.window < len(job.plan):
            stride = int(self.engine.model.frame_rate * self.engine.extend_stride_s)
            self._open_window(job, codes[:, stride:])
            return
        self._finish(job)

    def _finish(self, job: _Job) -> None:
        engine = self.engine
        tokens = torch.cat(job.pieces, dim=-1)[None]
        with engine._conv_flags():
            wav = engine.model.generate_audio(tokens)[0]
        audio = engine._to_audio([wav], [job.request], job.tail_s, job.request.new_seconds)[0]
        self._release(job)
        if job.on_progress is not None:
            job.on_progress(1.0)
        job.future.set_result(audio)

    def _fail_everything(self, exc: GenerationError) -> None:
        with self._cond:
            jobs = list(self._active) + list(self._waiting)
            self._waiting.clear()
        for job in jobs:
            self._release(job)
            if not job.future.done() and (job.future.running()
                                          or job.future.set_running_or_notify_cancel()):
                job.future.set_exception(exc)


def _sampling(request: GenerationRequest) -> Sampling:
    p = request.params
    return Sampling(p.temperature, p.top_k, p.top_p, p.cfg_coef)
