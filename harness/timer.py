"""Time a callable the way ``triton.testing.do_bench`` does: synchronise, warm up, budget in milliseconds, keep
every raw sample, report the median and quantiles.

No framework is imported here. A framework adapter supplies what is device specific:

* ``sync()``: wait for queued device work (CUDA synchronize, ``tf.test.experimental.sync_devices``); ``None`` on
  the CPU, where work is done when the call returns.
* ``event_factory()``: for GPUs, a pair of device events ``(start, end)`` with ``record()`` and
  ``start.elapsed_time(end) -> ms`` (``torch.cuda.Event(enable_timing=True)``). With events, each sample is the
  device time between the two events, and the host only synchronises once at the end of the repetitions.
  Without events, each sample is host wall time ``perf_counter_ns`` around ``fn()`` and a ``sync()``, or with
  ``clock="cpu"`` the calling thread's CPU time ``thread_time_ns`` (a call preempted by other work on a busy
  machine does not count the time it waited; every op must run on the calling thread: one intra-op thread).
* ``setup()``: run before each repetition, outside the timed region (reset gradients for backward timing).
* ``flush()``: run before each repetition, outside the timed region (write a buffer larger than the L2 cache on
  a GPU, so each repetition starts cold as in ``do_bench``).

Statistics: ``median``, ``iqr = p75 - p25``, ``p20``, ``p80`` (linear interpolation, NumPy's default), mean,
min, max, all in milliseconds, from every repetition (warm-up calls are discarded).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["HOST_CLOCKS", "Timing", "summarize", "time_fn", "time_once", "estimate_ms"]

_NS_PER_MS = 1e6


@dataclass(frozen=True)
class Timing:
    """Raw samples of one measurement (milliseconds) and the statistics derived from them.

    ``warmup_reps`` is the number of warm-up calls run before the samples and ``estimate_ms`` the per-call estimate
    (median of five synchronised calls, milliseconds) that sized the warm-up and the repetitions; ``time_fn`` sets
    both (the estimate also in ``meta["estimate_ms"]``, as before). ``compile_ms`` is the time of the first call
    when the workload compiles on it (None otherwise); it is kept apart from the samples, which only time compiled
    calls.
    """

    samples_ms: tuple[float, ...]
    warmup_reps: int = 0
    compile_ms: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    estimate_ms: float | None = None

    def __post_init__(self) -> None:
        if len(self.samples_ms) == 0:
            raise ValueError("samples_ms: expected at least one sample; got none")

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples_ms))

    @property
    def iqr_ms(self) -> float:
        p25, p75 = np.quantile(self.samples_ms, [0.25, 0.75])
        return float(p75 - p25)

    def stats(self) -> dict[str, Any]:
        """The ``TIMING_STATS`` columns that a timing measures (not memory or accuracy)."""
        out = summarize(self.samples_ms)
        out["compile_ms"] = self.compile_ms
        return out


def summarize(samples_ms: Sequence[float]) -> dict[str, Any]:
    """``median_ms, iqr_ms, p20_ms, p80_ms, mean_ms, min_ms, max_ms, n_samples, samples_ms`` of raw samples."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"samples_ms: expected a non-empty 1-D sequence; got shape {a.shape}")
    p20, p25, p50, p75, p80 = np.quantile(a, [0.2, 0.25, 0.5, 0.75, 0.8])
    return {
        "median_ms": float(p50),
        "iqr_ms": float(p75 - p25),
        "p20_ms": float(p20),
        "p80_ms": float(p80),
        "mean_ms": float(a.mean()),
        "min_ms": float(a.min()),
        "max_ms": float(a.max()),
        "n_samples": int(a.size),
        "samples_ms": [float(v) for v in a],
    }


def time_once(fn: Callable[[], Any], sync: Callable[[], None] | None = None) -> float:
    """Host time of one synchronised call in milliseconds (a first call: compile time, or one estimate)."""
    if sync is not None:
        sync()
    t0 = time.perf_counter_ns()
    fn()
    if sync is not None:
        sync()
    return (time.perf_counter_ns() - t0) / _NS_PER_MS


def estimate_ms(fn: Callable[[], Any], sync: Callable[[], None] | None = None, reps: int = 5) -> float:
    """Median host time of ``reps`` calls (milliseconds), synchronised: a first estimate to size the budget."""
    return float(np.median([time_once(fn, sync) for _ in range(max(1, reps))]))


def _check_budgets(warmup_ms: Any, rep_ms: Any, min_reps: Any, max_reps: Any) -> None:
    for name, value in (("warmup_ms", warmup_ms), ("rep_ms", rep_ms)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}: expected a finite number >= 0 (milliseconds); got {value!r}")
    if not (isinstance(min_reps, int) and min_reps >= 1):
        raise ValueError(f"min_reps: expected an int >= 1; got {min_reps!r}")
    if not (isinstance(max_reps, int) and max_reps >= min_reps):
        raise ValueError(f"max_reps: expected an int >= min_reps ({min_reps}); got {max_reps!r}")


def _preparation(setup: Callable[[], None] | None, flush: Callable[[], None] | None) -> Callable[[], None]:
    """What runs before every call, outside the timed region: ``setup()`` then ``flush()`` (either may be None)."""

    def prepared() -> None:
        if setup is not None:
            setup()
        if flush is not None:
            flush()

    return prepared


def _first_estimate(fn: Callable[[], Any], prepared: Callable[[], None], sync: Callable[[], None] | None) -> float:
    """One untimed call (lazy initialisation, allocator warm-up), then the median of five synchronised calls (ms),
    each after ``prepared()``; at least 1e-6 ms."""
    prepared()
    fn()
    est = []
    for _ in range(5):
        prepared()
        est.append(time_once(fn, sync))
    return max(float(np.median(est)), 1e-6)


def _warm_up(fn: Callable[[], Any], prepared: Callable[[], None], reps: int) -> None:
    for _ in range(reps):
        prepared()
        fn()


def _sample_events(fn: Callable[[], Any], prepared: Callable[[], None], sync: Callable[[], None] | None,
                   event_factory: Callable[[], tuple[Any, Any]], reps: int) -> list[float]:
    """Device time of each call between a pair of events; the host synchronises before and after all of them."""
    pairs = [event_factory() for _ in range(reps)]
    if sync is not None:
        sync()
    for start, end in pairs:
        prepared()
        start.record()
        fn()
        end.record()
    if sync is not None:
        sync()
    return [float(start.elapsed_time(end)) for start, end in pairs]


HOST_CLOCKS = {"wall": time.perf_counter_ns, "cpu": time.thread_time_ns}


def _sample_host(fn: Callable[[], Any], prepared: Callable[[], None], sync: Callable[[], None] | None,
                 reps: int, clock_name: str = "wall") -> list[float]:
    """Host time around each call (and its ``sync()`` before and after, when there is one): ``perf_counter_ns``
    (``"wall"``) or the calling thread's CPU time ``thread_time_ns`` (``"cpu"``)."""
    samples: list[float] = []
    clock = HOST_CLOCKS[clock_name]
    if sync is None:
        for _ in range(reps):
            prepared()
            t0 = clock()
            fn()
            samples.append((clock() - t0) / _NS_PER_MS)
    else:
        for _ in range(reps):
            prepared()
            sync()
            t0 = clock()
            fn()
            sync()
            samples.append((clock() - t0) / _NS_PER_MS)
    return samples


def time_fn(
    fn: Callable[[], Any],
    *,
    sync: Callable[[], None] | None = None,
    warmup_ms: float = 25.0,
    rep_ms: float = 100.0,
    min_reps: int = 5,
    max_reps: int = 10_000,
    setup: Callable[[], None] | None = None,
    flush: Callable[[], None] | None = None,
    event_factory: Callable[[], tuple[Any, Any]] | None = None,
    compile_ms: float | None = None,
    clock: str = "wall",
) -> Timing:
    """Time ``fn()``: warm up for about ``warmup_ms``, then repeat it for about ``rep_ms``, one sample per call.

    The number of repetitions is ``clamp(rep_ms / estimate, min_reps, max_reps)`` where the estimate is the median
    of five synchronised calls (run after ``setup``), like ``do_bench``; ``max(1, warmup_ms / estimate)`` warm-up
    calls precede them. ``setup`` and ``flush`` run before every call (warm-up and timed), outside the timed
    region. Returns every sample, the warm-up count and the estimate; see the module docstring for ``sync`` and
    ``event_factory``. ``clock``: what host samples are read with, ``"wall"`` or ``"cpu"`` (the calling thread's
    CPU time: time spent waiting for a core does not count; the budgets stay wall time).
    """
    _check_budgets(warmup_ms, rep_ms, min_reps, max_reps)
    if clock not in HOST_CLOCKS:
        raise ValueError(f"clock: expected one of {', '.join(HOST_CLOCKS)}; got {clock!r}")
    prepared = _preparation(setup, flush)
    estimate = _first_estimate(fn, prepared, sync)
    n_warmup = max(1, int(warmup_ms / estimate))
    n_reps = int(min(max(rep_ms / estimate, min_reps), max_reps))
    _warm_up(fn, prepared, n_warmup)
    if event_factory is not None:
        samples = _sample_events(fn, prepared, sync, event_factory, n_reps)
    else:
        samples = _sample_host(fn, prepared, sync, n_reps, clock)
    return Timing(tuple(samples), warmup_reps=n_warmup, compile_ms=compile_ms, meta={"estimate_ms": estimate},
                  estimate_ms=estimate)
