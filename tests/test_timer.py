"""The timer: statistics of raw samples, repetition budget, setup outside the timed region, device events."""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness.timer import Timing, summarize, time_fn


def test_summarize_matches_numpy_quantiles():
    samples = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0, 7.0]
    out = summarize(samples)
    a = np.array(samples)
    assert out["median_ms"] == pytest.approx(np.median(a))
    assert out["iqr_ms"] == pytest.approx(np.quantile(a, 0.75) - np.quantile(a, 0.25))
    assert out["p20_ms"] == pytest.approx(np.quantile(a, 0.2))
    assert out["p80_ms"] == pytest.approx(np.quantile(a, 0.8))
    assert (out["min_ms"], out["max_ms"], out["n_samples"]) == (1.0, 10.0, 7)
    assert out["samples_ms"] == samples  # every raw sample kept, in order


def test_summarize_rejects_empty():
    with pytest.raises(ValueError, match="samples_ms"):
        summarize([])
    with pytest.raises(ValueError, match="samples_ms"):
        Timing(())


@pytest.mark.parametrize("kwargs, name", [
    ({"rep_ms": -1.0}, "rep_ms"), ({"warmup_ms": float("nan")}, "warmup_ms"), ({"min_reps": 0}, "min_reps"),
    ({"min_reps": 10, "max_reps": 5}, "max_reps"),
])
def test_time_fn_rejects_bad_budgets(kwargs, name):
    with pytest.raises(ValueError, match=name):
        time_fn(lambda: None, **kwargs)


def test_every_repetition_is_a_sample_and_budget_bounds_hold():
    calls = []
    t = time_fn(lambda: calls.append(1), warmup_ms=0.0, rep_ms=0.0, min_reps=7, max_reps=7)
    assert t.stats()["n_samples"] == 7
    # 1 untimed first call + 5 for the estimate + at least 1 warm-up + 7 timed
    assert len(calls) >= 1 + 5 + 1 + 7
    t = time_fn(lambda: None, warmup_ms=0.0, rep_ms=1e9, min_reps=1, max_reps=50)
    assert t.stats()["n_samples"] == 50


def test_setup_runs_before_each_call_outside_the_timed_region():
    order = []

    def setup():
        order.append("setup")
        time.sleep(0.02)

    t = time_fn(lambda: order.append("fn"), setup=setup, warmup_ms=0.0, rep_ms=0.0, min_reps=5, max_reps=5)
    # every call is preceded by a setup
    assert all(order[i] == "setup" and order[i + 1] == "fn" for i in range(0, len(order), 2))
    # the 20 ms sleep is not in the samples: even the fastest sample would contain it otherwise
    assert min(t.samples_ms) < 20.0


def test_sync_is_called_around_each_host_sample():
    syncs = []
    t = time_fn(lambda: None, sync=lambda: syncs.append(1), warmup_ms=0.0, rep_ms=0.0, min_reps=4, max_reps=4)
    assert len(t.samples_ms) == 4
    assert len(syncs) >= 2 * 4


class _FakeEvent:
    """A device event on a fake clock that advances 2 ms per recorded kernel."""

    clock = [0.0]

    def __init__(self):
        self.t = None

    def record(self):
        self.t = self.clock[0]

    def elapsed_time(self, end):
        return end.t - self.t


def test_event_factory_samples_are_device_times():
    def kernel():
        _FakeEvent.clock[0] += 2.0

    t = time_fn(kernel, event_factory=lambda: (_FakeEvent(), _FakeEvent()), warmup_ms=0.0, rep_ms=0.0,
                min_reps=6, max_reps=6, compile_ms=123.0)
    assert t.samples_ms == (2.0,) * 6
    stats = t.stats()
    assert stats["median_ms"] == 2.0 and stats["iqr_ms"] == 0.0
    assert stats["compile_ms"] == 123.0


def test_timer_overhead_on_an_empty_function_is_under_5_us():
    # The minimum sample is robust to noise (noise only adds time): the timer's own cost is below it.
    t = time_fn(lambda: None, warmup_ms=1.0, rep_ms=5.0, min_reps=200, max_reps=5000)
    assert min(t.samples_ms) < 0.005, min(t.samples_ms)


def test_timing_carries_the_warm_up_count_and_the_estimate():
    def sleepy():
        time.sleep(0.002)

    t = time_fn(sleepy, warmup_ms=10.0, rep_ms=0.0, min_reps=3, max_reps=3)
    assert t.estimate_ms is not None and 1.5 <= t.estimate_ms < 50.0
    assert t.warmup_reps == max(1, int(10.0 / t.estimate_ms))
    assert t.meta["estimate_ms"] == t.estimate_ms  # the older place of the estimate
    assert Timing((1.0,)).estimate_ms is None and Timing((1.0,)).warmup_reps == 0


def test_warm_up_and_estimate_calls_are_counted_exactly():
    calls = []
    t = time_fn(lambda: calls.append(1), warmup_ms=0.0, rep_ms=0.0, min_reps=4, max_reps=4)
    # 1 untimed first call + 5 for the estimate + the warm-up calls + 4 timed
    assert len(calls) == 1 + 5 + t.warmup_reps + 4 and t.warmup_reps == 1


def test_the_cpu_clock_reads_the_threads_cpu_time_not_the_wall():
    # a call that sleeps 5 ms: 5 ms of wall time, next to no CPU time; a busy call: the same on both clocks
    def nap():
        time.sleep(0.005)

    wall = time_fn(nap, warmup_ms=0, rep_ms=20, min_reps=3, max_reps=3)
    cpu = time_fn(nap, warmup_ms=0, rep_ms=20, min_reps=3, max_reps=3, clock="cpu")
    assert min(wall.samples_ms) >= 5.0 and max(cpu.samples_ms) < 1.0

    def spin():
        end = time.thread_time() + 0.002
        while time.thread_time() < end:
            pass

    busy = time_fn(spin, warmup_ms=0, rep_ms=20, min_reps=3, max_reps=3, clock="cpu")
    assert min(busy.samples_ms) >= 2.0
    with pytest.raises(ValueError, match="clock: expected one of wall, cpu; got 'gpu'"):
        time_fn(spin, clock="gpu")
