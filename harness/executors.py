"""Executors: the seam between the runner and where cases run.

Cases are independent. The runner gives an executor a list of ``Task`` (JSON-able) and writes the rows it yields,
as they come, in any order. An executor implements ``map(tasks) -> Iterator[(task, row)]``; a distributed engine
(a job queue, Ray, Dask, Slurm) plugs in by shipping ``task.to_json()`` to a worker that calls
``harness.tasks.execute_task`` (or runs ``python -m harness``) and yielding the rows back, without touching
suites or results.

* ``InProcessExecutor``: runs each task in this process (frameworks stay imported between cases).
* ``SubprocessExecutor``: one fresh Python process per task (``python -m harness``, the task as JSON on stdin,
  the row as the last stdout line, after ``ROW_MARKER``): clean GPU memory, no TF/torch interference, and a case
  that crashes, runs out of memory or is killed gives a ``failed`` row instead of ending the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from harness.env import quiet_frameworks
from harness.results import make_row
from harness.tasks import Task, TaskGroup, execute_item

__all__ = ["Executor", "InProcessExecutor", "SubprocessExecutor", "ROW_MARKER"]

ROW_MARKER = "GATEBENCH_ROW "


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
    """Run each task in its own ``python -m harness`` process; ``timeout_s`` per case (None: no limit)."""

    def __init__(self, python: str | None = None, timeout_s: float | None = None,
                 env: Mapping[str, str] | None = None):
        self.python = python or sys.executable
        self.timeout_s = timeout_s
        self.env = quiet_frameworks({**os.environ, **(env or {})})

    def run_one(self, item: Task | TaskGroup) -> list[tuple[Task, dict[str, Any]]]:
        """Run a task or a group in one ``python -m harness`` process: a row per task, ``failed`` for a task
        whose row did not come back (crash, kill, out of memory, time limit: ``timeout_s`` per task)."""
        tasks = list(item.tasks) if isinstance(item, TaskGroup) else [item]
        timeout = None if self.timeout_s is None else self.timeout_s * len(tasks)
        try:
            proc = subprocess.run([self.python, "-m", "harness"], input=json.dumps(item.to_json()),
                                  capture_output=True, text=True, timeout=timeout, env=self.env, check=False)
        except subprocess.TimeoutExpired:
            return [(task, self._failed(task, f"subprocess: ran past its {timeout} s limit and was killed"))
                    for task in tasks]
        rows = {}
        for line in proc.stdout.splitlines():
            if line.startswith(ROW_MARKER):
                row = json.loads(line[len(ROW_MARKER):])
                rows[row.get("case_id")] = row
        tail = (proc.stderr or "").strip().splitlines()[-5:]
        lost = (f"subprocess: exited with code {proc.returncode} without a row"
                + (f": {' | '.join(tail)}" if tail else ""))
        return [(task, rows.get(task.case_id) or self._failed(task, lost)) for task in tasks]

    @staticmethod
    def _failed(task: Task, error: str) -> dict[str, Any]:
        """A failed row of the task's kind (a timing row has every statistic column, all None)."""
        return make_row(task.kind, task.suite, task.params, "failed", error=error)

    def map(self, tasks: Iterable[Task | TaskGroup]) -> Iterator[tuple[Task, dict[str, Any]]]:
        for item in tasks:
            yield from self.run_one(item)
