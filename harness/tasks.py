"""Tasks: what an executor runs, and the workers that turn one task into one row.

A ``Task`` is JSON-able (``to_json``/``from_json``), so it can cross a process or machine boundary; the worker
is ``execute_task(task) -> row``, in this process or in ``python -m harness`` (``harness/__main__.py``).

Per timing case (``execute_timing``): framework and device available? (else a ``skipped`` row with the reason)
-> build the workload -> accuracy check against the NumPy reference (a mismatch is a ``failed`` row, not timed)
-> time it -> peak memory of one call -> an ``ok`` row, with the workload's labels (``Workload.labels``: extra
descriptive columns such as ``gate_impl``) and the timer's ``warmup_reps`` and ``estimate_ms``. Any exception is
a ``failed`` row with its message.

A recovery case (``execute_recovery``) runs ``harness.recovery.suite.run_case(params) -> dict`` of metric columns
(on one intra-op thread per framework: ``harness.recovery.run.limit_threads``); a prediction case
(``kind = "prediction"``) ``harness.prediction.task.execute_prediction(task)``, which does the same for one digits
run.

Import order: ``harness.runner`` imports ``harness.executors``, which imports this module; nothing here imports
either. Frameworks load inside the adapters, when a case asks for one.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness import cases, machine
from harness.adapters import Unavailable, Workload, get_adapter
from harness.probe import PROBE_VERSION, time_probe
from harness.recovery import suite as recovery_suite
from harness.results import case_id, make_row
from harness.rounds import adaptive_stop, round_ratio_cis, round_timer, schedule
from harness.suite import TimingSettings
from harness.timer import Timing, time_fn

__all__ = ["Task", "TaskGroup", "GROUP_KEYS", "group_tasks", "tasks_of", "execute_item", "execute_task",
           "execute_group", "execute_timing", "execute_recovery"]

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


# Cases that differ only in these columns are compared with each other (gate against gate, impl against impl):
# they are timed together, in interleaved rounds (``execute_group``).
GROUP_KEYS: tuple[str, ...] = ("framework", "device", "mode", "gating", "batch", "input_dim", "experts", "k",
                               "dtype")


@dataclass(frozen=True)
class TaskGroup:
    """Timing tasks run together in one worker, their rounds interleaved (``execute_group``): JSON-able."""

    tasks: tuple[Task, ...]

    def to_json(self) -> dict[str, Any]:
        return {"group": [task.to_json() for task in self.tasks]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskGroup:
        return cls(tuple(Task.from_json(item) for item in data["group"]))


def tasks_of(item: Task | TaskGroup) -> list[Task]:
    """The tasks of a task or a group, in order."""
    return list(item.tasks) if isinstance(item, TaskGroup) else [item]


def group_tasks(tasks: Sequence[Task]) -> list[Task | TaskGroup]:
    """Timing tasks with more than one round, grouped by ``GROUP_KEYS`` (in order of first appearance); the
    others stay single tasks. Recovery tasks are never grouped."""
    groups: dict[tuple, list[Task]] = {}
    out: list[Task | TaskGroup | tuple] = []
    for task in tasks:
        if task.kind != "timing" or task.settings is None or (task.settings.rounds == 1
                                                                and task.settings.stop == "fixed"):
            out.append(task)
            continue
        key = (task.suite, *(task.params.get(name) for name in GROUP_KEYS))
        if key not in groups:
            groups[key] = []
            out.append(key)
        groups[key].append(task)
    return [TaskGroup(tuple(groups[item])) if isinstance(item, tuple) else item for item in out]


def execute_item(item: Task | TaskGroup | Mapping[str, Any]) -> list[tuple[Task, dict[str, Any]]]:
    """Run a task or a group (or the JSON form of either) in this process: ``[(task, row)]``."""
    if isinstance(item, Mapping):
        item = TaskGroup.from_json(item) if "group" in item else Task.from_json(item)
    started = time.time()
    if isinstance(item, TaskGroup):
        rows = execute_group(item.tasks)
        _free_device_memory()
        pairs = list(zip(item.tasks, rows, strict=True))
    else:
        pairs = [(item, execute_task(item))]
    ended = time.time()
    for _, row in pairs:  # when the worker ran it: executors that run items side by side are checked on these
        row.setdefault("started_at", started)
        row.setdefault("ended_at", ended)
    return pairs


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


@dataclass
class _Prepared:
    """A timing case built and checked, waiting for its rounds: its row's values so far and its samples."""

    task: Task
    workload: Workload
    provenance: dict[str, Any]
    values: dict[str, Any]
    samples: list[float] = field(default_factory=list)
    sample_rounds: list[int] = field(default_factory=list)
    first: Timing | None = None


def _failed_row(task: Task, exc: BaseException, provenance: Mapping[str, Any]) -> dict[str, Any]:
    return _timing_row(task, "failed", _error_text(exc), provenance, traceback=traceback.format_exc(limit=8)[-4000:])


def _pin_threads(framework: str, threads: int) -> None:
    """Pin the framework's threads for timing. TensorFlow initialised earlier in this process with other values
    keeps them: a warning says so, and the row's ``threads`` records what the case really ran with."""
    try:
        machine.set_threads(framework, threads)
    except machine.ThreadsPinnedError as exc:
        warnings.warn(str(exc), RuntimeWarning, stacklevel=3)


def _prepare(task: Task, settings: TimingSettings) -> _Prepared | dict[str, Any]:
    """Build and check one case: a ``_Prepared`` ready to be timed, or its final row (skipped or failed)."""
    provenance: dict[str, Any] = {}
    try:
        case = cases.Case.from_params(task.params)
        adapter = get_adapter(case.framework)
        adapter.check_device(case.device)
        provenance = adapter.versions(case.device)
        too_big = _reference_over_budget(case, settings)
        if too_big:
            return _timing_row(task, "skipped", too_big, provenance)
        _pin_threads(case.framework, settings.threads)
        workload = adapter.build_workload(case, settings)
        provenance = {**provenance, **workload.provenance}
        values: dict[str, Any] = dict(getattr(workload, "labels", None) or {})
        if settings.check:
            accuracy = workload.check()
            values.update({key: accuracy.get(key) for key in _ACCURACY_COLUMNS})
            if not accuracy["ok"]:
                return _timing_row(task, "failed", accuracy["error"], provenance, **values)
        return _Prepared(task, workload, provenance, values)
    except Unavailable as exc:
        return _timing_row(task, "skipped", str(exc), provenance)
    except Exception as exc:  # noqa: BLE001 - any failure of a case is recorded in its row, and the suite goes on
        return _failed_row(task, exc, provenance)


def _time_round(item: _Prepared, settings: TimingSettings, rounds: int, index: int) -> None:
    """Time one case for its share of the budget in round ``index`` (of ``rounds``); samples keep the round."""
    budget = round_timer(settings, rounds, index)
    workload = item.workload
    timing = time_fn(workload.fn, sync=workload.sync, setup=workload.setup, flush=workload.flush,
                     event_factory=workload.event_factory,
                     compile_ms=workload.compile_ms if item.first is None else None,
                     clock=settings.host_clock(item.task.params.get("device")), **budget)
    item.first = item.first or timing
    item.samples.extend(timing.samples_ms)
    item.sample_rounds.extend([index] * len(timing.samples_ms))


def _finish(item: _Prepared, settings: TimingSettings, shared: Mapping[str, Any]) -> dict[str, Any]:
    """The ok row of a timed case: statistics of every sample, the first round's warm-up, memory, machine state."""
    first = item.first
    assert first is not None
    timing = Timing(tuple(item.samples), warmup_reps=first.warmup_reps, compile_ms=first.compile_ms,
                    estimate_ms=first.estimate_ms)
    case = cases.Case.from_params(item.task.params)
    values = {**item.values, **_timer_columns(timing), **shared, "sample_rounds": item.sample_rounds,
              "threads": machine.threads_in_use(case.framework)["intra_op"],
              "clock": "events" if item.workload.event_factory is not None else settings.host_clock(case.device)}
    values["peak_mem_bytes"] = item.workload.memory() if settings.memory else None
    return _timing_row(item.task, "ok", None, item.provenance, **values)


def _run_rounds(items: list[_Prepared], settings: TimingSettings, failed: dict[str, dict[str, Any]],
                probe: list[float] | None = None) -> int:
    """Time ``items`` in interleaved rounds (``harness.rounds``); a case that fails leaves the later rounds with
    its row in ``failed``. With a ``probe`` list, the machine-speed probe (``harness.probe``) is timed before the
    round and after each case, and the median of those points is appended per round. Returns the number of rounds
    run."""
    by_id = {item.task.case_id: item for item in items}
    stop = adaptive_stop(settings) if settings.stop == "adaptive" else None
    rounds = settings.max_rounds if stop else settings.rounds
    clock = settings.host_clock("cpu")  # the probe is read like the group's CPU cases
    start = time.perf_counter()
    for index, order in enumerate(schedule(list(by_id), rounds, settings.round_seed)):
        points = [time_probe(clock=clock)] if probe is not None else []
        for cid in order:
            if cid in failed:
                continue
            try:
                _time_round(by_id[cid], settings, rounds, index)
            except Exception as exc:  # noqa: BLE001
                failed[cid] = _failed_row(by_id[cid].task, exc, by_id[cid].provenance)
            if probe is not None:
                points.append(time_probe(clock=clock))
        if probe is not None:
            probe.append(float(statistics.median(points)))
        live = [item for item in items if item.task.case_id not in failed]
        timed = [(item.task.params, item.samples, item.sample_rounds) for item in live]
        if stop and stop.done(round_ratio_cis(timed), time.perf_counter() - start):
            return index + 1
    return rounds


def execute_group(tasks: Sequence[Task]) -> list[dict[str, Any]]:
    """Check, then time the timing cases ``tasks`` (one device, framework, shape, mode) in interleaved rounds, so
    that a slow minute of a shared machine hits all of them alike; always one row per task, in their order."""
    settings = tasks[0].settings if tasks[0].settings is not None else TimingSettings()
    rows: dict[str, dict[str, Any]] = {}
    items: list[_Prepared] = []
    for task in tasks:
        prepared = _prepare(task, settings)
        if isinstance(prepared, _Prepared):
            items.append(prepared)
        else:
            rows[task.case_id] = prepared
    if items:
        state = machine.machine_state()
        # CPU groups only: a GPU case's kernel time does not follow the host's speed
        probe: list[float] | None = [] if items[0].task.params.get("device") == "cpu" else None
        ran = _run_rounds(items, settings, rows, probe)
        shared = {"rounds": ran, "round_seed": settings.round_seed, "stop": settings.stop,
                  "load_before": state["load_1m"], "load_after": machine.load_average(),
                  "usable_cores": state["usable_cores"], "probe_ms": probe,
                  "probe_version": PROBE_VERSION if probe is not None else None}
        for item in items:
            if item.task.case_id not in rows:
                try:
                    rows[item.task.case_id] = _finish(item, settings, shared)
                except Exception as exc:  # noqa: BLE001
                    rows[item.task.case_id] = _failed_row(item.task, exc, item.provenance)
    return [rows[task.case_id] for task in tasks]


def execute_timing(task: Task) -> dict[str, Any]:
    """Check, time and measure one timing case alone (its rounds interleave with nothing); always one row."""
    return execute_group([task])[0]


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
    if task.kind == "prediction":
        from harness.prediction.task import execute_prediction

        row = execute_prediction(task)
    else:
        row = execute_timing(task) if task.kind == "timing" else execute_recovery(task)
    if row.get("device") == "gpu" or row["status"] == "failed":  # the case's workload is out of scope here
        _free_device_memory()
    return row
