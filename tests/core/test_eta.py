"""Queue ETAs: the fast replay (a heap while the batch is full) gives exactly the times of the
step-by-step replay that defines them, at any depth and with more running jobs than slots
(other workers' jobs)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from bot.core.eta import SpeedEstimator


def replayed(estimator: SpeedEstimator, queued: Sequence[float],
             running: Sequence[float] = ()) -> float:
    """The definition: slots fill in queue order, every job advances at the measured rate
    for the batch's size, running jobs count as half done."""
    active = [[length / 2, False] for length in running]
    waiting = [[length, i == len(queued) - 1] for i, length in enumerate(queued)]
    clock = 0.0
    while active or waiting:
        while waiting and len(active) < estimator.slots:
            active.append(waiting.pop(0))
        rate = estimator.rate(len(active)) or 0.0
        step = min(job[0] for job in active)
        clock += step * rate
        for job in active:
            job[0] -= step
        if any(job[1] and job[0] <= 1e-9 for job in active):
            return clock
        active = [job for job in active if job[0] > 1e-9]
    return clock


def measured(rng: random.Random, slots: int) -> SpeedEstimator:
    estimator = SpeedEstimator(slots)
    for _ in range(rng.randint(1, 4)):
        estimator.record(rng.uniform(1, 30), rng.uniform(0.5, 20), rng.randint(1, slots))
    return estimator


@pytest.mark.parametrize("seed", range(4))
def test_the_eta_is_the_replay_of_the_queue(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(250):
        slots = rng.randint(1, 8)
        estimator = measured(rng, slots)
        queued = [rng.choice([1.0, 2.0, 5.0, 10.0, 30.0, rng.uniform(1, 60)])
                  for _ in range(rng.randint(0, 40))]
        running = [rng.choice([1.0, 5.0, 10.0, 30.0]) for _ in range(rng.randint(0, slots + 2))]
        assert estimator.eta(queued, running) == pytest.approx(
            replayed(estimator, queued, running), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_one_pass_gives_every_waiting_receipt_its_own_eta(seed: int) -> None:
    """One queue walk answers many receipts: each gets what its own replay gives."""
    rng = random.Random(100 + seed)
    for _ in range(120):
        slots = rng.randint(1, 8)
        estimator = measured(rng, slots)
        queued = [rng.choice([1.0, 2.0, 5.0, 30.0, rng.uniform(1, 60)])
                  for _ in range(rng.randint(1, 40))]
        running = [rng.choice([1.0, 5.0, 10.0, 30.0]) for _ in range(rng.randint(0, slots + 2))]
        places = rng.sample(range(len(queued) + 1), rng.randint(1, len(queued) + 1))
        etas = estimator.etas(queued, running, places)
        assert set(etas) == set(places)
        for place in places:
            assert etas[place] == pytest.approx(
                replayed(estimator, queued[:place], running), rel=1e-9, abs=1e-9), place


def test_a_deep_queue_gets_the_same_eta() -> None:
    rng = random.Random(7)
    estimator = measured(rng, 8)
    queued = [rng.choice([1.0, 5.0, 10.0, 30.0]) for _ in range(2000)]
    assert estimator.eta(queued, [5.0] * 8) == pytest.approx(
        replayed(estimator, queued, [5.0] * 8), rel=1e-9)


def test_no_measured_speed_means_no_guess() -> None:
    assert SpeedEstimator(4).eta([5.0, 10.0]) is None
    assert SpeedEstimator(4).etas([5.0, 10.0], [], [1, 2]) == {1: None, 2: None}
