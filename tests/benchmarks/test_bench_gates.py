"""pytest-benchmark benchmarks of the gates, built by the harness's adapters from ``suites/smoke.toml``
(per-example gating, ``fwd`` and ``fwdbwd``: 16 cases).

Each benchmark first checks the case against the NumPy reference (``workload.check()``), then times
``workload.fn()`` with ``benchmark.pedantic``: the adapter's ``setup`` (dropping accumulated gradients) runs
before each round outside the timed region, and the timer waits for the device before reading the clock. The
case's columns (``harness.results.TIMING_KEYS``), its ``case_id`` and ``suite`` go into ``extra_info``, so
``--benchmark-json`` output (with ``--benchmark-save-data`` for the raw samples) loads in ``gatebench report``
and ``gatebench compare`` as timing rows.

    pytest tests/benchmarks --benchmark-only --benchmark-save-data --benchmark-json=out/bench.json
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from harness.adapters import Unavailable, framework_installed, get_adapter
from harness.suite import expand, load_suite

SUITE = load_suite("smoke")
CASES = [c for c in expand(SUITE) if c.gating == "per_example" and c.mode in ("fwd", "fwdbwd")]
_SYNC: list[Callable[[], None] | None] = [None]


def synced_timer() -> float:
    """``time.perf_counter()`` after waiting for the current case's device."""
    if _SYNC[0] is not None:
        _SYNC[0]()
    return time.perf_counter()


def _marks(case) -> list:
    marks = [getattr(pytest.mark, case.framework)]
    if not framework_installed(case.framework):
        marks.append(pytest.mark.skip(reason=f"{case.framework} is not installed"))
    return marks


@pytest.mark.benchmark(group="gates", timer=synced_timer)
@pytest.mark.parametrize(
    "case", [pytest.param(c, id=f"{c.gate}-{c.framework}-{c.mode}", marks=_marks(c)) for c in CASES]
)
def test_gate(benchmark, case):
    try:
        adapter = get_adapter(case.framework)
        adapter.check_device(case.device)
    except Unavailable as exc:
        pytest.skip(str(exc))
    workload = adapter.build_workload(case, dict(SUITE.settings))
    accuracy = workload.check()
    assert accuracy["ok"], accuracy.get("error")
    benchmark.extra_info.update(case.params())
    benchmark.extra_info.update(
        case_id=case.case_id, suite=f"pytest-benchmark:{SUITE.name}", max_abs_err=accuracy["max_abs_err"]
    )
    setup = workload.setup
    _SYNC[0] = workload.sync
    try:
        benchmark.pedantic(workload.fn, setup=setup, rounds=20, warmup_rounds=2, iterations=1)
    finally:
        _SYNC[0] = None
