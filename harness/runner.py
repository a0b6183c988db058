"""The runner: plan a suite's cases, hand them to an executor, append each row as it comes back.

Per timing case (``execute_task``): framework and device available? (else a ``skipped`` row with the reason) ->
build the workload -> accuracy check against the NumPy reference (a mismatch is a ``failed`` row, not timed) ->
time it -> peak memory of one call -> an ``ok`` row. Any exception is a ``failed`` row with its message. Rows are
written by the parent process only (``ResultsWriter``: flushed and fsynced), one per case, as each finishes, so a
crash or a SIGKILL loses no completed row; ``resume=True`` skips the case ids already in the file.

Recovery suites (``kind = "recovery"``) go through the same planning, executors, resume and results file; their
cases come from ``harness.recovery.suite.expand(suite_dict)`` and run with
``harness.recovery.suite.run_case(params) -> dict`` of metric columns (on one intra-op thread per framework:
``harness.recovery.run.limit_threads``). ``gatebench recover --suite`` runs them through ``run_suite`` here too.

``python -m harness.runner SUITE --out DIR [--resume] [--isolate] [--framework torch ...]`` runs a suite without
the typer/rich CLI (what ``scripts/gpu_check.sh`` uses).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import cases as _cases
from harness.results import TIMING_STATS, ResultsWriter, completed_case_ids, make_row
from harness.suite import Suite, expand, filter_params, load_suite

__all__ = ["Task", "RunSummary", "plan", "run_suite", "execute_task", "results_path", "main"]

# Columns a timing row adds to TIMING_STATS: the gradient error of the accuracy check and the number of Top-k rows
# it left out as ambiguous at the dtype's precision.
EXTRA_TIMING_COLUMNS: tuple[str, ...] = ("max_grad_err", "fd_grad_err", "ambiguous_rows")


@dataclass(frozen=True)
class Task:
    """What an executor runs: JSON-able, so it can cross a process (or machine) boundary."""

    kind: str
    suite: str
    settings: dict[str, Any]
    params: dict[str, Any]

    @property
    def case_id(self) -> str:
        from harness.results import case_id

        return case_id(self.params)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "suite": self.suite, "settings": self.settings, "params": self.params}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Task:
        return cls(kind=data["kind"], suite=data["suite"], settings=dict(data["settings"]),
                   params=dict(data["params"]))


@dataclass
class RunSummary:
    path: Path
    planned: int
    resumed: int  # cases already in the file and not run again
    rows: list[dict[str, Any]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for row in self.rows if row.get("status") == status)


# --------------------------------------------------------------------------------------------------------------
# Planning.
# --------------------------------------------------------------------------------------------------------------
def plan(suite: Suite, filters: Mapping[str, Sequence[Any] | None] | None = None) -> list[Task]:
    """The suite's tasks, in suite order, after the filters (see ``harness.suite.filter_params``)."""
    if suite.kind == "timing":
        params = [case.params() for case in expand(suite)]
    else:
        from harness.recovery import suite as recovery_suite  # provided by the recovery engineer

        params = [dict(p) for p in recovery_suite.expand(suite.raw)]
    params = filter_params(params, filters or {})
    return [Task(suite.kind, suite.name, dict(suite.settings), dict(p)) for p in params]


def results_path(suite: Suite, out: str | os.PathLike[str]) -> Path:
    """``out`` itself when it names a ``.jsonl`` file, else ``out/<suite name>.jsonl``."""
    out = Path(out)
    return out if out.suffix == ".jsonl" else out / f"{suite.name}.jsonl"


# --------------------------------------------------------------------------------------------------------------
# Running one case.
# --------------------------------------------------------------------------------------------------------------
def _timing_row(task: Task, status: str, error: str | None = None, extra: Mapping[str, Any] | None = None,
                **values: Any) -> dict[str, Any]:
    full = {key: None for key in TIMING_STATS + EXTRA_TIMING_COLUMNS}
    full.update(values)
    return make_row("timing", task.suite, task.params, status, error=error, extra_provenance=extra, **full)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def execute_timing(task: Task) -> dict[str, Any]:
    """Check, time and measure one timing case; always returns a row (ok, failed or skipped)."""
    from harness.adapters import Unavailable, get_adapter
    from harness.timer import time_fn

    settings = task.settings
    extra: dict[str, Any] = {}
    try:
        case = _cases.Case.from_params(task.params)
        adapter = get_adapter(case.framework)
        adapter.check_device(case.device)
        extra = adapter.versions(case.device)
        if case.impl == "reference" and _cases.reference_bytes(case) > settings["max_reference_bytes"]:
            need = _cases.reference_bytes(case)
            return _timing_row(task, "skipped", (
                f"reference impl would need about {need / 2**30:.1f} GiB for its (b, k, n, m) tensors, over the "
                f"suite's max_reference_bytes ({settings['max_reference_bytes'] / 2**30:.1f} GiB)"), extra)
        workload = adapter.build_workload(case, settings)
        extra = {**extra, **workload.provenance}
        values: dict[str, Any] = {}
        if settings.get("check", True):
            acc = workload.check()
            values.update({key: acc.get(key) for key in ("max_abs_err", "max_grad_err", "fd_grad_err",
                                                         "ambiguous_rows")})
            if not acc["ok"]:
                return _timing_row(task, "failed", acc["error"], extra, **values)
        timing = time_fn(
            workload.fn, sync=workload.sync, warmup_ms=float(settings["warmup_ms"]), rep_ms=float(settings["rep_ms"]),
            min_reps=int(settings["min_reps"]), max_reps=int(settings["max_reps"]), setup=workload.setup,
            flush=workload.flush, event_factory=workload.event_factory, compile_ms=workload.compile_ms,
        )
        values.update(timing.stats())
        values["peak_mem_bytes"] = workload.memory() if settings.get("memory", True) else None
        return _timing_row(task, "ok", None, extra, **values)
    except Unavailable as exc:
        return _timing_row(task, "skipped", str(exc), extra)
    except Exception as exc:  # noqa: BLE001 - any failure of a case is recorded in its row, and the suite goes on
        return _timing_row(task, "failed", _error_text(exc), extra,
                           traceback=traceback.format_exc(limit=8)[-4000:])


def _free_device_memory() -> None:
    """Return cached GPU memory (after a case's tensors are gone), so the next case starts clean."""
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def execute_recovery(task: Task) -> dict[str, Any]:
    """Run one recovery case through ``harness.recovery.suite.run_case``; always returns a row."""
    try:
        from harness.recovery import suite as recovery_suite

        metrics = recovery_suite.run_case(dict(task.params))
        versions = getattr(recovery_suite, "framework_versions", None)
        extra = versions(task.params["framework"]) if versions and "framework" in task.params else None
        return make_row("recovery", task.suite, task.params, "ok", extra_provenance=extra, **metrics)
    except Exception as exc:  # noqa: BLE001
        return make_row("recovery", task.suite, task.params, "failed", error=_error_text(exc))


def execute_task(task: Task | Mapping[str, Any]) -> dict[str, Any]:
    """Run one task (a ``Task`` or its JSON form) in this process and return its row."""
    if not isinstance(task, Task):
        task = Task.from_json(task)
    row = execute_timing(task) if task.kind == "timing" else execute_recovery(task)
    if row.get("device") == "gpu" or row["status"] == "failed":  # the case's workload is out of scope here
        _free_device_memory()
    return row


# --------------------------------------------------------------------------------------------------------------
# Running a suite.
# --------------------------------------------------------------------------------------------------------------
def run_suite(
    suite: Suite | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    fresh: bool = False,
    executor: Any = None,
    filters: Mapping[str, Sequence[Any] | None] | None = None,
    on_plan: Callable[[list[Task], int], None] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> RunSummary:
    """Run ``suite``'s (filtered) cases through ``executor`` (default in-process), appending rows to the results.

    ``resume``: skip the case ids already in the results file. Without it an existing non-empty results file is
    an error, unless ``fresh`` (the old file is renamed ``*.jsonl.<time>.bak``). ``on_plan(tasks, resumed)`` is
    called once before running, ``on_row(row)`` after each row is written.
    """
    from harness.executors import InProcessExecutor

    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    path = results_path(suite, out)
    if path.exists() and path.stat().st_size > 0 and not resume:
        if not fresh:
            raise ValueError(f"out: {path} already has rows; pass resume to continue it or fresh to start over")
        stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
        path.rename(path.with_name(f"{path.name}.{stamp}.bak"))
    tasks = plan(suite, filters)
    done = completed_case_ids(path) if resume else set()
    todo = [task for task in tasks if task.case_id not in done]
    summary = RunSummary(path=path, planned=len(tasks), resumed=len(tasks) - len(todo))
    if on_plan is not None:
        on_plan(todo, summary.resumed)
    writer = ResultsWriter(path)
    for _, row in (executor or InProcessExecutor()).map(todo):
        writer.write(row)
        summary.rows.append(row)
        if on_row is not None:
            on_row(row)
    return summary


def _filters_from_args(args: argparse.Namespace) -> dict[str, list[str] | None]:
    return {key: getattr(args, key) for key in ("gate", "framework", "device", "impl", "mode", "gating", "dtype",
                                                "experts")}


def main(argv: Sequence[str] | None = None) -> int:
    """Plain command line (no typer, no rich): one line per row, a count at the end; exit 1 if a case failed."""
    parser = argparse.ArgumentParser(prog="python -m harness.runner", description=__doc__.split("\n")[0])
    parser.add_argument("suite")
    parser.add_argument("--out", default="results")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--isolate", action="store_true")
    for key in ("gate", "framework", "device", "impl", "mode", "gating", "dtype", "experts"):
        parser.add_argument(f"--{key}", action="append")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads: quiet, and no oneDNN
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # custom ops (their round-off differs run to run)
    args = parser.parse_args(argv)
    from harness.executors import InProcessExecutor, SubprocessExecutor

    executor = SubprocessExecutor() if args.isolate else InProcessExecutor()

    def on_row(row: dict[str, Any]) -> None:
        median = row.get("median_ms")
        timing = f"median {median:.4f} ms iqr {row['iqr_ms']:.4f} ms" if median is not None else ""
        print(f"[{row['status']}] {row['case_id']} {timing} {row.get('error') or ''}".rstrip(), flush=True)

    summary = run_suite(args.suite, args.out, resume=args.resume, fresh=args.fresh, executor=executor,
                        filters=_filters_from_args(args), on_row=on_row)
    print(f"{summary.path}: {len(summary.rows)} run ({summary.count('ok')} ok, {summary.count('failed')} failed, "
          f"{summary.count('skipped')} skipped), {summary.resumed} already done", flush=True)
    return 1 if summary.count("failed") else 0


if __name__ == "__main__":
    # Run the imported module's main, so that Task is one class (not __main__.Task and harness.runner.Task).
    from harness.runner import main as _main

    sys.exit(_main())
