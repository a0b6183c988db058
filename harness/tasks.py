"""Tasks: what an executor runs, and the workers that turn one task into one row.

A ``Task`` is JSON-able (``to_json``/``from_json``), so it can cross a process or machine boundary; the worker
is ``execute_task(task) -> row``, in this process or in ``python -m harness`` (``harness/__main__.py``).

Per timing case (``execute_timing``): framework and device available? (else a ``skipped`` row with the reason)
-> build the workload -> accuracy check against the NumPy reference (a mismatch is a ``failed`` row, not timed)
-> time it -> peak memory of one call -> an ``ok`` row, with the workload's labels (``Workload.labels``: extra
descriptive columns such as ``gate_impl``) and the timer's ``warmup_reps`` and ``estimate_ms``. Any exception is
a ``failed`` row with its message.

A recovery case (``execute_recovery``) runs ``harness.recovery.suite.run_case(params) -> dict`` of metric columns
(on one intra-op thread per framework: ``harness.recovery.run.limit_threads``).

Import order: ``harness.runner`` imports ``harness.executors``, which imports this module; nothing here imports
either. Frameworks load inside the adapters, when a case asks for one.
"""

from __future__ import annotations

import gc
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness import cases
from harness.adapters import Unavailable, Workload, get_adapter
from harness.recovery import suite as recovery_suite
from harness.results import case_id, make_row
from harness.suite import TimingSettings
from harness.timer import Timing, time_fn

__all__ = ["Task", "execute_task", "execute_timing", "execute_recovery"]

# Accuracy columns of ``Workload.check()`` recorded in a timing row.
_ACCURACY_COLUMNS: tuple[str, ...] = ("max_abs_err", "max_grad_err", "fd_grad_err", "ambiguous_rows")


@dataclass(frozen=True)
class Task:
    """One case to run: its kind, suite name, timing settings (None for recovery tasks) and identifying columns
    (``params``). A settings mapping (such as the JSON form) is checked into ``TimingSettings``."""

    kind: str
    suite: str
    settings: TimingSettings | None
    params: dict[str, Any]

    def __post_init__(self) -> None:
        if self.settings is not None and not isinstance(self.settings, TimingSettings):
            object.__setattr__(self, "settings", TimingSettings.from_json(self.settings, f"task of {self.suite}"))

    @property
    def case_id(self) -> str:
        return case_id(self.params)

    def to_json(self) -> dict[str, Any]:
        settings = None if self.settings is None else self.settings.to_json()
        return {"kind": self.kind, "suite": self.suite, "settings": settings, "params": self.params}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Task:
        return cls(kind=data["kind"], suite=data["suite"], settings=data.get("settings"),
                   params=dict(data["params"]))


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def _timing_row(task: Task, status: str, error: str | None = None, provenance: Mapping[str, Any] | None = None,
                **values: Any) -> dict[str, Any]:
    return make_row("timing", task.suite, task.params, status, error=error, extra_provenance=provenance, **values)


def _reference_over_budget(case: cases.Case, settings: TimingSettings) -> str | None:
    """Why a dselect_k 'reference' case is skipped (its (b, k, n, m) tensors over the budget), else None."""
    need = cases.reference_bytes(case) if case.impl == "reference" else 0
    if need <= settings.max_reference_bytes:
        return None
    return (f"reference impl would need about {need / 2**30:.1f} GiB for its (b, k, n, m) tensors, over the "
            f"suite's max_reference_bytes ({settings.max_reference_bytes / 2**30:.1f} GiB)")


def _timer_columns(timing: Timing) -> dict[str, Any]:
    """The timer's statistics, warm-up calls and first estimate (``Timing.estimate_ms``, else its ``meta``)."""
    estimate = getattr(timing, "estimate_ms", None)
    if estimate is None:
        estimate = getattr(timing, "meta", {}).get("estimate_ms")
    return {**timing.stats(), "warmup_reps": getattr(timing, "warmup_reps", None), "estimate_ms": estimate}


def _time_workload(workload: Workload, settings: TimingSettings) -> Timing:
    return time_fn(
        workload.fn, sync=workload.sync, warmup_ms=settings.warmup_ms, rep_ms=settings.rep_ms,
        min_reps=settings.min_reps, max_reps=settings.max_reps, setup=workload.setup, flush=workload.flush,
        event_factory=workload.event_factory, compile_ms=workload.compile_ms,
    )


def execute_timing(task: Task) -> dict[str, Any]:
    """Check, time and measure one timing case; always returns a row (ok, failed or skipped)."""
    settings = task.settings if task.settings is not None else TimingSettings()
    provenance: dict[str, Any] = {}
    try:
        case = cases.Case.from_params(task.params)
        adapter = get_adapter(case.framework)
        adapter.check_device(case.device)
        provenance = adapter.versions(case.device)
        too_big = _reference_over_budget(case, settings)
        if too_big:
            return _timing_row(task, "skipped", too_big, provenance)
        workload = adapter.build_workload(case, settings)
        provenance = {**provenance, **workload.provenance}
        values: dict[str, Any] = dict(getattr(workload, "labels", None) or {})
        if settings.check:
            accuracy = workload.check()
            values.update({key: accuracy.get(key) for key in _ACCURACY_COLUMNS})
            if not accuracy["ok"]:
                return _timing_row(task, "failed", accuracy["error"], provenance, **values)
        values.update(_timer_columns(_time_workload(workload, settings)))
        values["peak_mem_bytes"] = workload.memory() if settings.memory else None
        return _timing_row(task, "ok", None, provenance, **values)
    except Unavailable as exc:
        return _timing_row(task, "skipped", str(exc), provenance)
    except Exception as exc:  # noqa: BLE001 - any failure of a case is recorded in its row, and the suite goes on
        return _timing_row(task, "failed", _error_text(exc), provenance,
                           traceback=traceback.format_exc(limit=8)[-4000:])


def execute_recovery(task: Task) -> dict[str, Any]:
    """Run one recovery case through ``harness.recovery.suite.run_case``; always returns a row."""
    try:
        metrics = recovery_suite.run_case(dict(task.params))
        framework = task.params.get("framework")
        versions = recovery_suite.framework_versions(framework) if framework else None
        return make_row("recovery", task.suite, task.params, "ok", extra_provenance=versions, **metrics)
    except Exception as exc:  # noqa: BLE001
        return make_row("recovery", task.suite, task.params, "failed", error=_error_text(exc))


def _free_device_memory() -> None:
    """Return cached GPU memory (after a case's tensors are gone), so the next case starts clean."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def execute_task(task: Task | Mapping[str, Any]) -> dict[str, Any]:
    """Run one task (a ``Task`` or its JSON form) in this process and return its row."""
    if not isinstance(task, Task):
        task = Task.from_json(task)
    row = execute_timing(task) if task.kind == "timing" else execute_recovery(task)
    if row.get("device") == "gpu" or row["status"] == "failed":  # the case's workload is out of scope here
        _free_device_memory()
    return row
