"""asv benchmarks of the gates, one per case of the harness's regression suite (``benchmarks/grid.py``).

* ``TimeGate.time_call``: asv times ``workload.fn()`` (plus the adapter's per-repetition ``setup``, which only
  drops accumulated gradients) with ``synced_timer``, a clock that first waits for the device (CUDA synchronize
  / ``tf.test.experimental.sync_devices``), so queued GPU work is inside the timed interval.
* ``TimeGate.track_harness_median_ms``: the harness's own measurement (``harness.timer.time_fn`` with the
  suite's settings: warm-up, repetition budget, synchronisation); the median in ms.
* ``PeakMemory.track_peak_mem_bytes``: the adapter's peak extra bytes of one call, measured in a fresh
  subprocess (``benchmarks/peakmem_child.py``) so that earlier benchmarks' caches do not hide allocations.
  TensorFlow has no allocator statistics on the CPU: those cases are skipped.
* ``RecoveryF1.track_f1``: support-recovery F1 of a small planted problem (the recovery suite's first problem,
  seed 0), unit "F1".
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

try:
    from harness.env import quiet_frameworks
except ImportError:  # a commit from before harness.env: scripts/asv_commits.sh exports the same variables
    pass
else:
    quiet_frameworks()  # before the grid's harness (and any framework) loads

from . import grid  # noqa: E402

_SYNC: list[Callable[[], None] | None] = [None]


def synced_timer() -> float:
    """``time.perf_counter()`` after waiting for the current case's device (asv calls it before and after)."""
    sync = _SYNC[0]
    if sync is not None:
        sync()
    return time.perf_counter()


def _workload(values: tuple[str, ...]):
    from harness.adapters import Unavailable, get_adapter

    case = grid.case_of(*values)
    try:
        adapter = get_adapter(case.framework)
        adapter.check_device(case.device)
    except Unavailable as exc:
        raise NotImplementedError(str(exc)) from exc
    return case, adapter.build_workload(case, grid.SETTINGS)


class TimeGate:
    params = grid.PARAMS
    param_names = grid.PARAM_NAMES
    timer = staticmethod(synced_timer)
    timeout = 300
    warmup_time = 0.2

    def setup(self, *params: str) -> None:
        self.case, self.workload = _workload(params)
        w = self.workload
        if w.setup is None:
            self.call = w.fn
        else:
            fn, reset = w.fn, w.setup

            def call() -> None:
                reset()
                fn()

            self.call = call
        self.call()  # first call: lazy initialisation, compilation
        _SYNC[0] = w.sync

    def teardown(self, *params: str) -> None:
        _SYNC[0] = None

    def time_call(self, *params: str) -> None:
        self.call()

    def track_harness_median_ms(self, *params: str) -> float:
        from harness.timer import time_fn

        w, s = self.workload, grid.SETTINGS  # s["key"]: a mapping at every commit (TimingSettings or a dict)
        timing = time_fn(
            w.fn,
            sync=w.sync,
            warmup_ms=float(s["warmup_ms"]),
            rep_ms=float(s["rep_ms"]),
            min_reps=int(s["min_reps"]),
            max_reps=int(s["max_reps"]),
            setup=w.setup,
            flush=w.flush,
            event_factory=w.event_factory,
        )
        return timing.median_ms

    track_harness_median_ms.unit = "ms"  # type: ignore[attr-defined]


class PeakMemory:
    params = grid.PARAMS
    param_names = grid.PARAM_NAMES
    timeout = 300
    number = 1
    repeat = 1

    def setup(self, *params: str) -> None:
        self.case = grid.case_of(*params)
        if self.case.framework == "tf" and self.case.device == "cpu":
            raise NotImplementedError("TensorFlow has no allocator statistics on the CPU")

    def track_peak_mem_bytes(self, *params: str) -> int:
        # Run by path, not with -m: the code under test must come from PYTHONPATH (asv's ASV_PYTHONPATH, a
        # worktree of the commit being measured), not from the directory that holds the benchmarks.
        child = Path(__file__).resolve().parent / "peakmem_child.py"
        out = subprocess.run(
            [sys.executable, str(child), json.dumps(self.case.params())],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"peak memory subprocess failed ({out.returncode}): {out.stderr[-2000:]}")
        value = json.loads(out.stdout.strip().splitlines()[-1])["peak_mem_bytes"]
        if value is None:
            raise NotImplementedError("the adapter has no peak-memory measure for this case")
        return int(value)

    track_peak_mem_bytes.unit = "bytes"  # type: ignore[attr-defined]


class RecoveryF1:
    params = grid.RECOVERY_PARAMS
    param_names = grid.RECOVERY_PARAM_NAMES
    timeout = 600
    number = 1
    repeat = 1

    def setup(self, gate: str, framework: str) -> None:
        from harness.adapters import framework_installed

        self.case_params = grid.recovery_case_of(gate, framework)
        if not framework_installed(framework):
            raise NotImplementedError(f"{framework} is not installed")

    def track_f1(self, gate: str, framework: str) -> float:
        from harness.recovery import suite as recovery_suite

        return float(recovery_suite.run_case(dict(self.case_params))["f1"])

    track_f1.unit = "F1"  # type: ignore[attr-defined]
