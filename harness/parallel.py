"""Several cases at once on one machine (``--jobs N``): work units, recovery batches, and a local process pool.

A *unit* is what one worker runs in one go: a timing ``Task`` or ``TaskGroup`` alone, or a batch of recovery
tasks (``plan_units``). Every executor that runs units elsewhere (this pool, ``harness.ray_executor``) ships
``unit.to_json()`` to a worker that calls ``run_unit`` (``harness.tasks.execute_item`` on each item's JSON) and
hands the rows back to the driver, which alone writes the results file.

Scheduling rules (``LocalPoolExecutor``):

* Recovery units run ``jobs`` at a time, each worker process pinned to its share of the cores
  (``os.sched_setaffinity``) with one intra-op thread per framework (``harness.machine.thread_env(1)``).
* Timing units run alone: the pool is drained, the unit runs in the driver process (``isolate``: in its own
  ``python -m harness`` subprocess), and only then does the pool go on. Timing measured beside other work would
  measure the contention. This holds for GPU timing too, so a device never times two units at once.
* A worker process that dies (a crash, the kernel's out-of-memory killer) breaks the pool: the pool is started
  again, and each unit that was running is tried once more, alone; a unit that kills its worker again gives a
  ``failed`` row per task with the reason.

Recovery batches: one recovery run of the default problem (600 steps) takes about 1.2 s on this kind of CPU
(``docs/recovery.md``), so it is its own unit; smaller runs are batched, seeds of one gate, framework and problem
together, into units of about ``BATCH_TARGET_S`` of estimated work (``RUN_S_PER_STEP`` per training step), at
most ``MAX_BATCH`` runs, and never so large that there would be fewer than ``2 * workers`` units.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing
import os
import queue
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from harness.machine import thread_env, usable_cores
from harness.results import make_row
from harness.tasks import Task, TaskGroup, execute_item, tasks_of

__all__ = ["Unit", "plan_units", "run_unit", "split_cores", "LocalPoolExecutor", "BATCH_TARGET_S",
           "RUN_S_PER_STEP", "MAX_BATCH"]

BATCH_TARGET_S = 1.0  # estimated seconds of work per recovery unit
RUN_S_PER_STEP = 0.002  # measured: a 600-step run of the default recovery problem takes about 1.2 s
MAX_BATCH = 8  # recovery runs per unit, at most


@dataclass(frozen=True)
class Unit:
    """What one worker runs in one go: ``items`` (a timing task or group alone, or recovery tasks) and its
    ``resource``: ``cpu_timing`` and ``gpu_timing`` (timing, by device) or ``recovery``."""

    items: tuple[Task | TaskGroup, ...]
    resource: str

    @property
    def tasks(self) -> list[Task]:
        return [task for item in self.items for task in tasks_of(item)]

    def to_json(self) -> list[dict[str, Any]]:
        return [item.to_json() for item in self.items]

    def failed(self, error: str) -> list[tuple[Task, dict[str, Any]]]:
        """A ``failed`` row per task of the unit (a worker that died, a lost unit), with ``error``."""
        return [(task, make_row(task.kind, task.suite, task.params, "failed", error=error)) for task in self.tasks]

    def match(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Task, dict[str, Any]]]:
        """Pair the rows a worker sent back with the unit's tasks (by case id); a task without one is failed."""
        by_id = {row.get("case_id"): dict(row) for row in rows}
        return [(task, by_id.get(task.case_id)
                 or make_row(task.kind, task.suite, task.params, "failed", error="worker: no row came back"))
                for task in self.tasks]


def _resource(item: Task | TaskGroup) -> str:
    first = tasks_of(item)[0]
    if first.kind != "timing":
        return "recovery"
    return "gpu_timing" if first.params.get("device") == "gpu" else "cpu_timing"


def batch_size(tasks: Sequence[Task], workers: int) -> int:
    """Recovery runs per unit for ``tasks`` (see the module docstring): about ``BATCH_TARGET_S`` of estimated
    work, at most ``MAX_BATCH``, and at least ``2 * workers`` units in all."""
    if not tasks:
        return 1
    steps = max(int(task.params.get("steps") or 600) for task in tasks)
    by_cost = max(1, math.floor(BATCH_TARGET_S / (steps * RUN_S_PER_STEP)))
    by_balance = max(1, len(tasks) // (2 * max(1, workers)))
    return max(1, min(MAX_BATCH, by_cost, by_balance))


def plan_units(items: Iterable[Task | TaskGroup], workers: int) -> list[Unit]:
    """The units of ``items``, in their order: each timing item alone; recovery tasks of one suite, gate,
    framework and problem batched (``batch_size``), a batch placed where its first task was."""
    items = list(items)
    recovery = [item for item in items if _resource(item) == "recovery"]
    size = batch_size(recovery, workers)
    out: list[Unit | tuple] = []
    open_batches: dict[tuple, list[Task]] = {}
    for item in items:
        kind = _resource(item)
        if kind != "recovery":
            out.append(Unit((item,), kind))
            continue
        key = (item.suite, item.params.get("gate"), item.params.get("framework"), item.params.get("problem"))
        batch = open_batches.get(key)
        if batch is None or len(batch) >= size:
            batch = open_batches[key] = []
            out.append((key, batch))
        batch.append(item)
    return [unit if isinstance(unit, Unit) else Unit(tuple(unit[1]), "recovery") for unit in out]


def run_unit(unit: Sequence[Mapping[str, Any]], provenance: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run a unit's items (their JSON forms) in this process: every row, with ``provenance`` added to each."""
    rows = []
    for item in unit:
        for _, row in execute_item(item):
            if provenance:
                row["provenance"] = {**row.get("provenance", {}), **provenance}
            rows.append(row)
    return rows


def split_cores(jobs: int, cores: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """``jobs`` disjoint shares of ``cores`` (default: the cores this process may use), as even as they come;
    with more jobs than cores, the shares are single cores, reused in turn."""
    cores = sorted(cores if cores is not None else _affinity())
    if jobs <= len(cores):
        return [tuple(cores[i::jobs]) for i in range(jobs)]
    return [(cores[i % len(cores)],) for i in range(jobs)]


def _affinity() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(usable_cores()))


# --------------------------------------------------------------------------------------------------------------
# Pool workers.
# --------------------------------------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(slots: Any, shares: Sequence[tuple[int, ...]]) -> None:
    """A pool worker's start: take the next share of the cores, one thread per framework pool, quiet TF."""
    from harness.env import quiet_frameworks

    with slots.get_lock():
        index = slots.value
        slots.value += 1
    cores = shares[index % len(shares)]
    _die_with_parent()
    os.environ.update(thread_env(1))
    quiet_frameworks()
    try:
        os.sched_setaffinity(0, cores)
    except (AttributeError, OSError):
        cores = ()
    _WORKER.update(cores=list(cores), pid=os.getpid())


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the driver dies (``PR_SET_PDEATHSIG``), so no idle worker outlives
    a SIGKILLed run; a worker whose driver is already gone exits."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:
        os._exit(1)


def _pool_run(unit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return run_unit(unit, {"executor": "local-pool", "worker_pid": _WORKER.get("pid"),
                           "worker_cores": _WORKER.get("cores")})


# --------------------------------------------------------------------------------------------------------------
# The local pool.
# --------------------------------------------------------------------------------------------------------------
@dataclass
class _Pending:
    unit: Unit
    attempt: int = 0  # 1: a retry after its worker died, run alone


class LocalPoolExecutor:
    """Run recovery units ``jobs`` at a time in worker processes on this machine, timing units alone (see the
    module docstring); rows stream back as units finish.

    ``isolate``: a factory of ``harness.executors.SubprocessExecutor`` (called with ``env=`` and ``cpus=``, or
    with nothing for the timing units, which run alone): every task then runs in its own ``python -m harness``
    process (fresh state per case, the factory's time limit), still ``jobs`` at a time and pinned. Given by
    ``harness.executors.make_executor``, which this module does not import (executors import it)."""

    def __init__(self, jobs: int, *, isolate: Callable[..., Any] | None = None,
                 cores: Sequence[int] | None = None):
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs: expected an integer >= 1; got {jobs!r}")
        self.jobs = jobs
        self.isolate = isolate
        self.shares = split_cores(jobs, cores)

    def _run_alone(self, unit: Unit) -> Iterator[tuple[Task, dict[str, Any]]]:
        """A timing unit, with nothing else running: in this process, or in its own subprocess (``isolate``)."""
        for item in unit.items:
            yield from (self.isolate().run_one(item) if self.isolate else execute_item(item))

    def map(self, tasks: Iterable[Task | TaskGroup]) -> Iterator[tuple[Task, dict[str, Any]]]:
        pending = deque(_Pending(unit) for unit in plan_units(tasks, self.jobs))
        pool = self._start()
        running: dict[cf.Future, _Pending] = {}
        try:
            while pending or running:
                while pending and self._may_start(pending[0], running):
                    job = pending.popleft()
                    if job.unit.resource != "recovery":  # alone: nothing else runs (the pool is drained)
                        yield from self._run_alone(job.unit)
                        continue
                    running[pool.submit(job.unit.to_json())] = job
                if not running:
                    continue
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                broken = [running.pop(future) for future in done if _broken(future)]
                for future in [future for future in done if future in running]:
                    yield from running.pop(future).unit.match(future.result())
                if broken:
                    broken += [running.pop(future) for future in list(running) if _broken(future, wait=True)]
                    for future in list(running):  # finished before the break: its rows are kept
                        yield from running.pop(future).unit.match(future.result())
                    pool.shutdown(wait=True, cancel_futures=True)
                    yield from _retry_or_fail(broken, pending)
                    pool = self._start()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _may_start(self, job: _Pending, running: Mapping[cf.Future, _Pending]) -> bool:
        """Timing units and retried units start when nothing runs; recovery units while a worker is free and no
        retried unit runs."""
        if job.unit.resource != "recovery" or job.attempt:
            return not running
        return len(running) < self.jobs and not any(other.attempt for other in running.values())

    def _start(self) -> _ProcessPool | _IsolatedPool:
        if self.isolate:
            return _IsolatedPool(self.shares, self.isolate)
        return _ProcessPool(self.jobs, self.shares)


def _broken(future: cf.Future, wait: bool = False) -> bool:
    """Whether ``future`` ended because the pool broke (a worker process died)."""
    if not wait and not future.done():
        return False
    try:
        future.result()
    except BrokenProcessPool:
        return True
    except Exception:  # noqa: BLE001 - any other error is raised where the rows are read
        return False
    return False


def _retry_or_fail(broken: Sequence[_Pending], pending: deque) -> Iterator[tuple[Task, dict[str, Any]]]:
    """Units whose worker died: each goes back to the front of the queue once, to run alone; a unit that was
    already running alone when its worker died gives a failed row per task."""
    for job in reversed(broken):
        if job.attempt == 0:
            pending.appendleft(_Pending(job.unit, attempt=1))
        else:
            yield from job.unit.failed("worker: the worker process died while running this case (it was retried "
                                       "once, alone, and died again)")


class _ProcessPool:
    """``jobs`` spawned worker processes that stay up between units (frameworks stay imported), pinned."""

    def __init__(self, jobs: int, shares: Sequence[tuple[int, ...]]):
        context = multiprocessing.get_context("spawn")
        self._pool = cf.ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                                            initargs=(context.Value("i", 0), list(shares)))

    def submit(self, unit: list[dict[str, Any]]) -> cf.Future:
        return self._pool.submit(_pool_run, unit)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


class _IsolatedPool:
    """One ``python -m harness`` process per task, as many at a time as there are shares of the cores, each
    pinned to its share (``SubprocessExecutor(cpus=...)``)."""

    def __init__(self, shares: Sequence[tuple[int, ...]], make: Callable[..., Any]):
        self._free: queue.Queue = queue.Queue()
        for share in shares:
            self._free.put(make(env=thread_env(1), cpus=share))
        self._threads = cf.ThreadPoolExecutor(len(shares))

    def submit(self, unit: list[dict[str, Any]]) -> cf.Future:
        return self._threads.submit(self._run, unit)

    def _run(self, unit: list[dict[str, Any]]) -> list[dict[str, Any]]:
        worker = self._free.get()
        try:
            items = [TaskGroup.from_json(item) if "group" in item else Task.from_json(item) for item in unit]
            return [row for item in items for _, row in worker.run_one(item)]
        finally:
            self._free.put(worker)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        self._threads.shutdown(wait=wait, cancel_futures=cancel_futures)
