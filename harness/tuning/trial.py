"""One run of a study as a task: a tuning run (a trial's configuration on a tuning seed, scored on the validation
split) or a held-out run (the best configuration on a held-out seed, scored like any recovery run).

Both are ``harness.tasks.Task`` of kind ``"recovery"`` whose params are a recovery case's (``gate``,
``framework``, ``seed``, ``problem`` and every ``RecoveryProblem`` knob, the trial's hyper-parameters among them)
plus the study's columns ``STUDY_KEYS``: ``study`` (name), ``trial`` (number; for a held-out run the trial it
reruns), ``split`` (``"tune"`` or ``"heldout"``), ``sampler`` and ``tuning_seed``. Their rows are recovery rows
(``harness.results.make_row``), written by the generic runner (``harness.runner.run_suite``, with
``TuningExecutor``), so a study's results file resumes like any other.

A tuning row has ``val_mse`` (the trained model's mean squared error on the validation split), ``final_loss``,
``train_ms``, ``nnz`` and ``selection``; no support metric and no test metric: the run never had the support or
the test split (``validation.trial_data``). A held-out row has every metric of ``harness.recovery.run.score``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from harness.recovery.problem import RecoveryProblem
from harness.results import make_row

from .validation import trial_data

__all__ = ["SPLITS", "STUDY_KEYS", "task_params", "problem_of", "train_on", "run_tune", "run_heldout",
           "execute_tuning_task", "execute_tuning_group", "train_group_on", "TuningExecutor"]

SPLITS: tuple[str, ...] = ("tune", "heldout")
STUDY_KEYS: tuple[str, ...] = ("study", "trial", "split", "sampler", "tuning_seed")
CASE_KEYS: tuple[str, ...] = ("gate", "framework", "seed", "problem")


def task_params(problem: RecoveryProblem, problem_name: str, gate: str, framework: str, seed: int,
                study: Mapping[str, Any]) -> dict[str, Any]:
    """The identifying columns of one run: the case's, every problem knob, and ``study`` (``STUDY_KEYS``)."""
    missing = [key for key in STUDY_KEYS if key not in study]
    if missing:
        raise ValueError(f"study: missing {', '.join(missing)}; got {dict(study)!r}")
    if study["split"] not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(SPLITS)}; got {study['split']!r}")
    params = {"gate": gate, "framework": framework, "seed": int(seed), "problem": problem_name}
    params.update(problem.to_dict())
    params.update({key: study[key] for key in STUDY_KEYS})
    return params


def problem_of(params: Mapping[str, Any]) -> RecoveryProblem:
    return RecoveryProblem.from_dict({k: v for k, v in params.items() if k not in CASE_KEYS + STUDY_KEYS})


def train_on(data: Any, gate: str, framework: str) -> Any:
    """Train ``gate`` on ``data`` (``harness.recovery.run.train``; the one seam every run of a study goes through)."""
    from harness.recovery.run import train

    return train(data, gate, framework)


_TRAIN_ON = train_on


def train_group_on(datas: Sequence[Any], gate: str, framework: str) -> Iterator[Any]:
    """The results of several runs of one gate, in order: trained together (``harness.recovery.run.train_many``),
    or one by one through ``train_on`` when it has been replaced (a test's recorder then sees every run, as it
    finishes)."""
    if train_on is not _TRAIN_ON or len(datas) < 2:
        return (train_on(data, gate, framework) for data in datas)
    from harness.recovery.run import train_many

    return iter(train_many(datas, gate, framework))


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _tune_metrics(gate: str, result: Any) -> dict[str, Any]:
    from harness.recovery.metrics import SELECTIONS

    selected = np.asarray(result.history[-1], dtype=bool)
    return {"val_mse": _finite(result.test_mse), "final_loss": _finite(result.final_loss),
            "train_ms": float(result.train_ms), "nnz": float(selected.sum(axis=-1).mean()),
            "selection": SELECTIONS.get(gate)}


def _data(params: Mapping[str, Any]) -> Any:
    """The data a run trains on: the seed's instance, its test split replaced by the validation split for a
    tuning run (``trial_data``)."""
    from harness.recovery.data import generate

    data = generate(problem_of(params), params["seed"])
    return trial_data(data) if params.get("split") == "tune" else data


def _metrics(params: Mapping[str, Any], data: Any, result: Any) -> dict[str, Any]:
    from harness.recovery.run import score

    return _tune_metrics(params["gate"], result) if params.get("split") == "tune" else \
        score(data, params["gate"], result)


def run_tune(params: Mapping[str, Any]) -> dict[str, Any]:
    """A tuning run: train on the seed's training split, evaluate on its validation split (``trial_data``)."""
    data = _data(params)
    return _tune_metrics(params["gate"], train_on(data, params["gate"], params["framework"]))


def run_heldout(params: Mapping[str, Any]) -> dict[str, Any]:
    """A held-out run: train on the seed's training split and score on its test split against the support."""
    data = _data(params)
    return _metrics(params, data, train_on(data, params["gate"], params["framework"]))


def execute_tuning_task(task: Any) -> dict[str, Any]:
    """Run one task of a study (``harness.tasks.Task``, kind ``recovery``); always returns a row."""
    params = dict(task.params)
    try:
        metrics = run_tune(params) if params.get("split") == "tune" else run_heldout(params)
        return _ok_row(task, params, metrics)
    except Exception as exc:  # noqa: BLE001 - a failed run is a failed row; the study goes on
        return make_row("recovery", task.suite, params, "failed", error=f"{type(exc).__name__}: {exc}".strip())


def _ok_row(task: Any, params: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, Any]:
    from harness.recovery.suite import framework_versions

    return make_row("recovery", task.suite, dict(params), "ok",
                    extra_provenance=framework_versions(params["framework"]), **metrics)


def _group_key(task: Any) -> tuple[Any, ...]:
    """Runs that train together: one gate, framework and split, problems equal but for the per-run knobs."""
    from harness.recovery.batch import batch_key

    params = task.params
    return (task.suite, params["gate"], params["framework"], params.get("split"), batch_key(problem_of(params)))


def execute_tuning_group(tasks: Sequence[Any]) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Run tasks of one ``_group_key`` together (``train_group_on``), yielding ``(task, row)`` as each run's result
    comes; if the batch fails, its runs are rerun one by one (each its own row, failed or not)."""
    if len(tasks) < 2:
        yield from ((task, execute_tuning_task(task)) for task in tasks)
        return
    params = [dict(task.params) for task in tasks]
    done = 0
    try:
        datas = [_data(p) for p in params]
        results = train_group_on(datas, params[0]["gate"], params[0]["framework"])
        for task, p, data, result in zip(tasks, params, datas, results, strict=False):
            row = _ok_row(task, p, _metrics(p, data, result))
            done += 1
            yield task, row
    except Exception:  # noqa: BLE001 - rerun the rest one by one: each run's failure is its own row
        yield from ((task, execute_tuning_task(task)) for task in tasks[done:])


class TuningExecutor:
    """Runs a study's tasks in this process (``harness.executors.Executor``: ``map`` yields ``(task, row)``);
    consecutive runs of one gate that can share a batch (a trial's tuning seeds, the held-out reruns) train
    together (``execute_tuning_group``)."""

    def map(self, items: Iterable[Any]) -> Iterator[tuple[Any, dict[str, Any]]]:
        tasks = [task for item in items for task in getattr(item, "tasks", (item,))]  # TaskGroups never made here
        start = 0
        while start < len(tasks):
            end = start + 1
            while end < len(tasks) and _group_key(tasks[end]) == _group_key(tasks[start]):
                end += 1
            yield from execute_tuning_group(tasks[start:end])
            start = end
