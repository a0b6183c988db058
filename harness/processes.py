"""Timing in several fresh processes (``processes = P``): the process, not the round, as the unit between runs.

Measured on this project's shared 2-core VMs (docs/performance.md), the speed of the same code moves in two ways
that interleaved rounds inside one process cannot see: with the host's state over seconds to minutes, and with the
process itself (two processes timing the same case in alternation, in the same seconds, read 26 and 42 µs). Two
runs of unchanged code then differ by up to 2.5x, with intervals over rounds far narrower than that.

``ProcessesExecutor`` does what pyperf does against the second: every case is timed in ``P`` worker processes,
one after the other (never two at a time), and against the first it spreads them over the run: the whole suite
runs once in process 0, then again in process 1, and so on, so a case's processes are minutes apart on a long
suite. Each process times every group in ``rounds / P`` interleaved rounds (rounded up) with ``1 / P`` of the
budget (``rep_ms``, ``min_reps``, ``max_reps``; the full warm-up, as a fresh process needs it) and the round seed
``round_seed + p``, so the run costs the same timed budget as one process plus ``P - 1`` start-ups and warm-ups.

Each process's row is written as it comes, with ``process``, ``processes`` and the run's ``run_id``: a crash or a
kill loses no completed process, and ``--resume`` times only the (case, process) pairs the run lacks, under the
same ``run_id`` (``continue_run``). Readers merge the parts into one row per case (``harness.merge``), whose
``round_processes`` says which process timed each round; ``gatebench compare`` then uses the processes as its
units (``reports.compare``).

A worker is ``python -m harness --stream``: one JSON item per line on stdin, its rows as ``GATEBENCH_ROW`` lines
and ``GATEBENCH_DONE`` on stdout. A worker that dies or runs past ``timeout_s`` per case gives ``failed`` rows for
its item, and the pass goes on in a new worker (a new process of the same index).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from harness.children import DONE_MARKER, end_group, row_of, worker_preexec
from harness.env import quiet_frameworks
from harness.merge import is_part
from harness.results import make_row
from harness.suite import TimingSettings
from harness.tasks import Task, TaskGroup, tasks_of

__all__ = ["ProcessesExecutor", "StreamWorker", "worker_settings"]


def worker_settings(settings: TimingSettings, process: int) -> TimingSettings:
    """The settings process ``process`` times with: ``rounds / processes`` rounds (rounded up), ``1 / processes``
    of the timed budget, the full warm-up, round seed ``round_seed + process``, and one process of its own."""
    share = settings.processes
    return dataclasses.replace(
        settings, processes=1, rounds=settings.rounds_per_process, rep_ms=settings.rep_ms / share,
        min_reps=math.ceil(settings.min_reps / share), max_reps=max(math.ceil(settings.max_reps / share),
                                                                    math.ceil(settings.min_reps / share)),
        round_seed=settings.round_seed + process, max_rounds=max(settings.rounds_per_process, 1))


def _with_settings(tasks: Sequence[Task], settings: TimingSettings) -> Task | TaskGroup:
    moved = tuple(Task(task.kind, task.suite, settings, task.params) for task in tasks)
    return moved[0] if len(moved) == 1 else TaskGroup(moved)


class StreamWorker:
    """One ``python -m harness --stream`` process that runs items one after the other (frameworks stay imported
    between them). ``run(item)`` gives ``(task, row)`` for every task, ``failed`` rows when the worker died or ran
    past ``timeout_s`` per task (the worker is then gone: ``alive`` is False). It dies with this process (Linux)."""

    def __init__(self, python: str | None = None, timeout_s: float | None = None,
                 env: Mapping[str, str] | None = None):
        self.timeout_s = timeout_s
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen([python or sys.executable, "-m", "harness", "--stream"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1,
                                      env=quiet_frameworks({**os.environ, **(env or {})}),
                                      preexec_fn=worker_preexec(), process_group=0)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.pid = self._proc.pid

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def run(self, item: Task | TaskGroup) -> list[tuple[Task, dict[str, Any]]]:
        tasks = tasks_of(item)
        limit = None if self.timeout_s is None else self.timeout_s * len(tasks)
        rows: dict[str, dict[str, Any]] = {}
        why = None
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(item.to_json()) + "\n")
            self._proc.stdin.flush()
            while True:
                line = self._lines.get(timeout=limit)
                if line is None:
                    why = f"worker process exited with code {self._proc.wait()} without its rows{self._tail()}"
                    break
                if line == DONE_MARKER:
                    break
                row = row_of(line)
                if row is not None:
                    rows[row.get("case_id")] = row
        except queue.Empty:
            why = f"worker process ran past its time limit ({self.timeout_s:g} s per case) and was killed"
            self.close(kill=True)
        except OSError as exc:  # a broken pipe: the worker is gone (or going)
            try:
                code = self._proc.wait(timeout=5)
                why = f"worker process exited with code {code} without its rows{self._tail()}"
            except subprocess.TimeoutExpired:
                why = f"worker process could not be reached ({exc}){self._tail()}"
            self.close(kill=True)
        return [(task, rows.get(task.case_id) or make_row(task.kind, task.suite, task.params, "failed",
                                                           error=f"processes: {why or 'no row came back'}"))
                for task in tasks]

    def _tail(self) -> str:
        try:
            self._stderr.seek(0)
            tail = self._stderr.read().strip().splitlines()[-3:]
        except (OSError, ValueError):
            return ""
        return f": {' | '.join(tail)}" if tail else ""

    def close(self, kill: bool = False) -> None:
        """End the worker: EOF on its stdin (it exits after its current item), or SIGKILL to its group."""
        if self._proc.poll() is None and not kill:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.close()
                self._proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                kill = True
        if self._proc.poll() is None or kill:
            end_group(self._proc)
        self._stderr.close()


class ProcessesExecutor:
    """Time every timing item in ``processes`` fresh worker processes, pass after pass (see the module
    docstring); rows are yielded as they come, each stamped with ``process``, ``processes`` and ``run_id``. Items
    without timing settings run once, in the first pass. ``timeout_s``: per case, as ``--case-timeout``."""

    def __init__(self, processes: int, timeout_s: float | None = None, python: str | None = None):
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes: expected an integer >= 1; got {processes!r}")
        self.processes, self.timeout_s, self.python = processes, timeout_s, python
        self.run_id = uuid.uuid4().hex[:12]
        self.done: set[tuple[str, int]] = set()

    def continue_run(self, rows: Iterable[Mapping[str, Any]]) -> str | None:
        """Resume the newest run of ``rows`` (a results file's) timed in as many processes: reuse its ``run_id``
        and skip its (case, process) pairs whose newest row is ok or skipped. Returns the run id, or None when the
        file has no such run (a new one starts)."""
        parts = [row for row in rows if is_part(row) and row.get("processes") == self.processes]
        if not parts:
            return None
        run_id = parts[-1]["run_id"]
        newest: dict[tuple[str, int], str] = {}
        for row in parts:
            if row["run_id"] == run_id:
                newest[(row["case_id"], int(row["process"]))] = row.get("status")
        self.run_id = run_id
        self.done = {pair for pair, status in newest.items() if status in ("ok", "skipped")}
        return run_id

    def map(self, tasks: Iterable[Task | TaskGroup]) -> Iterator[tuple[Task, dict[str, Any]]]:
        items = list(tasks)
        for process in range(self.processes):
            worker: StreamWorker | None = None
            try:
                for item in items:
                    settings = tasks_of(item)[0].settings
                    if settings is None:  # not a timing item: run once, unstamped
                        if process == 0:
                            worker = worker if worker is not None and worker.alive else self._worker()
                            yield from worker.run(item)
                        continue
                    todo = [task for task in tasks_of(item) if (task.case_id, process) not in self.done]
                    if not todo:
                        continue
                    worker = worker if worker is not None and worker.alive else self._worker()
                    by_id = {task.case_id: task for task in todo}
                    for _, row in worker.run(_with_settings(todo, worker_settings(settings, process))):
                        row.update(process=process, processes=self.processes, run_id=self.run_id)
                        yield by_id[row["case_id"]], row
            finally:
                if worker is not None:
                    worker.close()

    def _worker(self) -> StreamWorker:
        return StreamWorker(self.python, self.timeout_s)
