"""The machine-speed probe: one fixed, framework-free workload timed in every round of a CPU timing group.

Interleaved rounds (``harness.rounds``) protect the ratios *within* a run: a slow spell hits every case of a group
alike. Between two runs nothing cancels it. The probe was built as the partner that would: a few hundred
microseconds of small NumPy operations and interpreter work (what a CPU gate case is made of: dispatches of small
kernels), timed before the round and after each case of the group, so each round records how fast the machine was
while its cases ran. ``gatebench compare`` shows NEW's probe over OLD's and, with ``--speed-correction``, divides
each round's timings by that round's probe (``reports.comparison.speed_corrected``). Measured, the whole-group
slowdowns between back-to-back runs moved the cases 1.6-1.8x and the probe 1.0-1.1x (docs/performance.md), so the
correction is off by default.

The workload is fixed (``PROBE_VERSION`` names it) and independent of torch and TensorFlow, so a change of gate code
or of framework version cannot move it; a change of NumPy or Python can, and ``compare``'s provenance table shows
those. It is pinned to one thread: NumPy's elementwise operations and sorts used here do not call BLAS.
"""

from __future__ import annotations

import numpy as np

from harness.timer import HOST_CLOCKS

__all__ = ["PROBE_VERSION", "PROBE_REPS", "probe_workload", "time_probe"]

# Bump when the workload changes: rows with another version are not speed-corrected against each other.
PROBE_VERSION = 1
# Calls per probe point; their median is the point's time.
PROBE_REPS = 3
_SIZE, _STEPS = 256, 40
_START = np.random.default_rng(0).standard_normal(_SIZE)


def probe_workload() -> float:
    """The fixed workload: ``_STEPS`` rounds of small elementwise kernels, a sort, a reduction and a Python loop
    over a few values (about 0.2 ms on this project's 2-core VM). Returns a number, so that nothing is optimised
    away."""
    x = _START.copy()
    total = 0.0
    for step in range(_STEPS):
        x = np.tanh(x * 0.999 + 0.01 * step)
        x.sort()
        total += float(x.sum())
        for value in x[:8].tolist():
            total += value * value
    return total


def time_probe(reps: int = PROBE_REPS, clock: str = "wall") -> float:
    """The median time in milliseconds of ``reps`` calls of ``probe_workload``, read with ``clock`` (``"wall"`` or
    ``"cpu"``, the thread's CPU time: the clock the group's cases are read with)."""
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise ValueError(f"reps: expected an integer >= 1; got {reps!r}")
    if clock not in HOST_CLOCKS:
        raise ValueError(f"clock: expected one of {', '.join(HOST_CLOCKS)}; got {clock!r}")
    read = HOST_CLOCKS[clock]
    times = []
    for _ in range(reps):
        start = read()
        probe_workload()
        times.append((read() - start) / 1e6)
    return float(np.median(times))
