"""Executors: the seam between the runner and where cases run.

Cases are independent. The runner gives an executor a list of ``Task`` (JSON-able) and writes the rows it yields,
as they come, in any order. An executor implements ``map(tasks) -> Iterator[(task, row)]``; a distributed engine
(a job queue, Ray, Dask, Slurm) plugs in by shipping ``task.to_json()`` to a worker that calls
``harness.tasks.execute_task`` (or runs ``python -m harness``) and yielding the rows back, without touching
suites or results.

* ``InProcessExecutor``: runs each task in this process (frameworks stay imported between cases).
* ``SubprocessExecutor``: one fresh Python process per task (``python -m harness``, the task as JSON on stdin,
  the row as the last stdout line, after ``ROW_MARKER``): clean GPU memory, no TF/torch interference, and a case
  that crashes, runs out of memory, is killed or runs past its time limit (``timeout_s``; ``--case-timeout``, the
  suite's ``case_timeout_s``) gives a ``failed`` row instead of ending the suite. Workers never outlive the run.
* ``harness.parallel.LocalPoolExecutor`` (``--jobs N``): recovery cases N at a time in pinned worker processes,
  timing cases alone; ``harness.ray_executor.RayExecutor`` (``--executor ray``): Ray tasks on a cluster.
  ``make_executor`` picks one from the command line's options.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from harness.children import ROW_MARKER, row_of
from harness.children import end_group as _end_group
from harness.children import worker_preexec as _worker_preexec
from harness.env import quiet_frameworks
from harness.results import make_row
from harness.suite import TimingSettings
from harness.tasks import Task, TaskGroup, execute_item, tasks_of

__all__ = ["Executor", "InProcessExecutor", "SubprocessExecutor", "ROW_MARKER", "EXECUTORS", "make_executor"]



class Executor(Protocol):
    """``map(items)``: run each ``Task`` or ``TaskGroup`` (several timing tasks timed in interleaved rounds) and
    yield ``(task, row)`` for every task, as rows come."""

    def map(self, tasks: Iterable[Task | TaskGroup]) -> Iterator[tuple[Task, dict[str, Any]]]: ...


class InProcessExecutor:
    """Run tasks one after the other in this process."""

    def map(self, tasks: Iterable[Task | TaskGroup]) -> Iterator[tuple[Task, dict[str, Any]]]:
        for item in tasks:
            yield from execute_item(item)


class SubprocessExecutor:
    """Run each task in its own ``python -m harness`` process; ``timeout_s`` per case (None: no limit).

    Each worker runs in its own process group, and ends with its parent: it is killed (its whole group) when its
    case runs past the limit, when the parent is interrupted or gets SIGTERM (a handler while ``map`` runs), and,
    on Linux, by the kernel when the parent dies any other way (``PR_SET_PDEATHSIG``, set before the worker starts).
    """

    def __init__(self, python: str | None = None, timeout_s: float | None = None,
                 env: Mapping[str, str] | None = None, cpus: Iterable[int] | None = None):
        if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float))
                                      or not math.isfinite(timeout_s) or timeout_s <= 0):
            raise ValueError(f"case_timeout_s: expected a number of seconds > 0; got {timeout_s!r}")
        self.python = python or sys.executable
        self.timeout_s = timeout_s
        self.env = quiet_frameworks({**os.environ, **(env or {})})
        self.cpus = None if cpus is None else tuple(cpus)  # the cores a worker may run on (Linux; None: any)

    def run_one(self, item: Task | TaskGroup) -> list[tuple[Task, dict[str, Any]]]:
        """Run a task or a group in one ``python -m harness`` process: a row per task, ``failed`` for a task
        whose row did not come back (crash, kill, out of memory, time limit: ``timeout_s`` per task)."""
        tasks = tasks_of(item)
        timeout = None if self.timeout_s is None else self.timeout_s * len(tasks)
        proc = subprocess.Popen([self.python, "-m", "harness"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env, preexec_fn=_worker_preexec(self.cpus),
                                process_group=0)
        try:
            stdout, stderr = proc.communicate(json.dumps(item.to_json()), timeout=timeout)
        except subprocess.TimeoutExpired:
            _end_group(proc)
            limit = f"{self.timeout_s:g} s per case" + (f", {timeout:g} s for its {len(tasks)}" if len(tasks) > 1
                                                       else "")
            return [(task, self._failed(task, f"subprocess: ran past its time limit ({limit}) and was killed"))
                    for task in tasks]
        finally:
            if proc.poll() is None:  # interrupted, or SIGTERM: the worker does not outlive this call
                _end_group(proc)
        rows = {}
        for line in stdout.splitlines():
            row = row_of(line)
            if row is not None:
                rows[row.get("case_id")] = row
        tail = (stderr or "").strip().splitlines()[-5:]
        lost = (f"subprocess: exited with code {proc.returncode} without a row"
                + (f": {' | '.join(tail)}" if tail else ""))
        return [(task, rows.get(task.case_id) or self._failed(task, lost)) for task in tasks]

    @staticmethod
    def _failed(task: Task, error: str) -> dict[str, Any]:
        """A failed row of the task's kind (a timing row has every statistic column, all None)."""
        return make_row(task.kind, task.suite, task.params, "failed", error=error)

    def map(self, tasks: Iterable[Task | TaskGroup]) -> Iterator[tuple[Task, dict[str, Any]]]:
        with _sigterm_raises():
            for item in tasks:
                yield from self.run_one(item)




@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While the executor runs (in the main thread, SIGTERM not handled already): SIGTERM raises SystemExit(143),
    so the running worker is killed on the way out."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


EXECUTORS: tuple[str, ...] = ("local", "ray")


def _check_jobs(jobs: Any) -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs: expected an integer >= 1; got {jobs!r}")
    return jobs


def _check_combination(isolate: bool, case_timeout_s: float | None, jobs: int, executor: str,
                       address: str | None) -> None:
    """The options that do not go together, each a ValueError naming the option."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor: expected one of {', '.join(EXECUTORS)}; got {executor!r}")
    if case_timeout_s is not None and not isolate:
        raise ValueError(f"case_timeout: expected --isolate with it (a case in this process cannot be stopped); "
                         f"got --case-timeout {case_timeout_s:g} without --isolate")
    if executor == "local" and address is not None:
        raise ValueError(f"address: expected --executor ray with it; got --address {address} with the local "
                         "executor")
    if executor == "ray" and isolate:
        raise ValueError("isolate: expected no --isolate with --executor ray (Ray runs every task in a worker "
                         "process of its own); got both")
    if executor == "ray" and address is not None and jobs != 1:
        raise ValueError(f"jobs: expected no --jobs with --address (a cluster's nodes declare their own CPUs); "
                         f"got --jobs {jobs}")


def make_executor(isolate: bool = False, case_timeout_s: float | None = None,
                  settings: TimingSettings | None = None, *, jobs: int = 1, executor: str = "local",
                  address: str | None = None) -> Executor:
    """The executor of a run.

    * ``executor="local"`` (the default): ``jobs == 1`` runs cases in this process, or with ``isolate`` one
      subprocess per case with a time limit of ``case_timeout_s`` (else the suite's ``case_timeout_s`` setting;
      None: no limit). ``jobs > 1``: ``harness.parallel.LocalPoolExecutor`` (recovery cases ``jobs`` at a time,
      timing cases alone; ``isolate`` and the time limit as above). A limit needs ``isolate``: a case in this
      process cannot be stopped.
    * ``settings.processes > 1`` (a timing suite's ``processes``): ``harness.processes.ProcessesExecutor``, every
      case timed in that many fresh worker processes (each a subprocess: ``isolate`` is implied, ``jobs`` does not
      apply to timing, the time limit as above); not with Ray.
    * ``executor="ray"``: ``harness.ray_executor.RayExecutor`` on the cluster at ``address`` (``"auto"``, or
      ``HOST:PORT``), or without one on a local cluster of ``jobs`` CPUs (``jobs == 1``: every usable core).
      Needs the ``ray`` extra; ``isolate`` does not apply.
    """
    _check_jobs(jobs)
    _check_combination(isolate, case_timeout_s, jobs, executor, address)
    processes = settings.processes if settings is not None else 1
    if processes > 1:
        if executor == "ray":
            raise ValueError(f"processes: expected 1 with --executor ray (Ray places tasks on its own workers); "
                             f"got {processes}")
        from harness.processes import ProcessesExecutor

        return ProcessesExecutor(processes, timeout_s=case_timeout_s if case_timeout_s is not None
                                 else settings.case_timeout_s)
    if executor == "ray":
        from harness.ray_executor import RayExecutor

        return RayExecutor(address=address, num_cpus=jobs if jobs > 1 else None)
    if isolate and case_timeout_s is None and settings is not None:
        case_timeout_s = settings.case_timeout_s
    if jobs > 1:
        from harness.parallel import LocalPoolExecutor

        isolated = functools.partial(SubprocessExecutor, timeout_s=case_timeout_s) if isolate else None
        return LocalPoolExecutor(jobs, isolate=isolated)
    if not isolate:
        return InProcessExecutor()
    return SubprocessExecutor(timeout_s=case_timeout_s)
