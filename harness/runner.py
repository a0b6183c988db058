"""The runner: plan a suite's cases, hand them to an executor, append each row as it comes back.

``plan(suite)`` gives one ``harness.tasks.Task`` per case (timing and recovery suites alike), after the filters;
``run_suite`` runs them through an executor (``harness.executors``: in this process by default, or one subprocess
per case) and writes each row as it comes (``ResultsWriter``: flushed and fsynced), so a crash or a SIGKILL loses
no completed row; the file is locked for the whole run (one writer at a time); ``resume=True`` skips the cases
already done in the file (their newest row ok or skipped; failed ones run again). What one case does is in
``harness.tasks``; the command line over this is ``python -m gatebench run`` (``gatebench run``).
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.executors import Executor, InProcessExecutor
from harness.merge import is_part
from harness.results import ResultsLock, ResultsWriter, completed_case_ids, latest_rows, read_rows
from harness.suite import Suite, filter_params, load_suite
from harness.tasks import Task, execute_task, group_tasks

__all__ = ["RunSummary", "plan", "run_suite", "results_path", "backup_path", "Task", "execute_task"]


@dataclass
class RunSummary:
    path: Path
    planned: int
    resumed: int  # cases already done in the file and not run again
    rows: list[dict[str, Any]] = field(default_factory=list)
    still_failed: int = 0  # planned cases whose newest row, in the file, is failed

    def count(self, status: str) -> int:
        return sum(1 for row in self.rows if row.get("status") == status)


def plan(suite: Suite, filters: Mapping[str, Sequence[Any] | None] | None = None) -> list[Task]:
    """The suite's tasks, in suite order, after the filters (see ``harness.suite.filter_params``)."""
    kept = filter_params(suite.case_params(), filters or {})
    return [Task(suite.kind, suite.name, suite.settings, dict(params)) for params in kept]


def results_path(suite: Suite, out: str | os.PathLike[str]) -> Path:
    """``out`` itself when it names a ``.jsonl`` file, else ``out/<suite name>.jsonl``."""
    out = Path(out)
    return out if out.suffix == ".jsonl" else out / f"{suite.name}.jsonl"


def backup_path(path: Path) -> Path:
    """A name for moving ``path`` aside that no earlier backup has: ``<name>.<time>.bak``, then ``.2.bak``, ..."""
    stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    candidate, number = path.with_name(f"{path.name}.{stamp}.bak"), 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}.{stamp}.{number}.bak")
    return candidate


def _prepare_results(path: Path, resume: bool, fresh: bool) -> None:
    """Refuse to mix runs: an existing non-empty file needs ``resume``, or ``fresh`` (moved to ``*.<time>.bak``).
    Called with the file's lock held, so no other run can write to it between the check and the move."""
    if path.exists() and path.stat().st_size > 0 and not resume:
        if not fresh:
            raise ValueError(f"out: {path} already has rows; pass resume to continue it or fresh to start over")
        path.rename(backup_path(path))


def _still_failed(path: Path, tasks: Sequence[Task]) -> int:
    """How many of ``tasks`` have a failed newest row in the results file."""
    newest = latest_rows(read_rows(path).rows)
    return sum(1 for task in tasks if newest.get(task.case_id, {}).get("status") == "failed")


def run_suite(
    suite: Suite | str | os.PathLike[str] | Mapping[str, Any],
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    fresh: bool = False,
    retry_skipped: bool = False,
    executor: Executor | None = None,
    filters: Mapping[str, Sequence[Any] | None] | None = None,
    on_plan: Callable[[list[Task], int], None] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> RunSummary:
    """Run ``suite``'s (filtered) cases through ``executor`` (default in-process), appending rows to the results.

    The results file is checked and locked (``harness.results.ResultsLock``) before anything else, and stays
    locked until the run ends: a second run on it fails at once (``ResultsLocked``). ``resume``: skip the cases
    whose newest row is ok or skipped (failed cases run again; ``retry_skipped`` reruns skipped ones too).
    Without it an existing non-empty results file is an error, unless ``fresh`` (the old file is renamed
    ``*.jsonl.<time>.bak``, a name no earlier backup has). ``on_plan(tasks, resumed)`` is called once before
    running, ``on_row(row)`` after each row is written. A write that fails (disk full) raises ``ResultsError``
    with every earlier row intact.
    """
    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    path = results_path(suite, out)
    with ResultsLock(path):
        _prepare_results(path, resume, fresh)
        tasks = plan(suite, filters)
        done = completed_case_ids(path, retry_skipped=retry_skipped) if resume else set()
        todo = [task for task in tasks if task.case_id not in done]
        executor = executor or InProcessExecutor()
        if resume and hasattr(executor, "continue_run"):  # several processes: time only what the run lacks
            executor.continue_run(read_rows(path).rows)
        summary = RunSummary(path=path, planned=len(tasks), resumed=len(tasks) - len(todo))
        if on_plan is not None:
            on_plan(todo, summary.resumed)
        with ResultsWriter(path, lock=False) as writer:
            for _, row in executor.map(group_tasks(todo)):
                writer.write(row)
                summary.rows.append(row)
                if on_row is not None:
                    on_row(row)
        if any(is_part(row) for row in summary.rows):  # one row per case, earlier processes of it included
            newest = latest_rows(read_rows(path).rows)
            summary.rows = [dict(newest[cid]) for cid in dict.fromkeys(row["case_id"] for row in summary.rows)]
        summary.still_failed = _still_failed(path, tasks)
    return summary
