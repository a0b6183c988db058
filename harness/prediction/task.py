"""One prediction run as a task, and its row.

A run's identifying columns (``run_params``): ``gate``, ``framework``, ``seed``, ``split`` (``val``: a tuning run,
scored on the validation split; ``test``: a held-out run, scored on the test split), ``problem`` (its name), the
study's ``study``, ``trial``, ``sampler``, ``tuning_seed``, and every ``PredictionProblem`` knob. Its row
(``prediction_row``) has the common columns of every results row (``harness.schema.COMMON``: ``schema``, ``kind``
= ``"prediction"``, ``suite``, ``case_id``, ``status``, ``error``, ``provenance``), the identifying columns and the
metrics of ``run_case`` (``METRICS``, plus ``acc_<task>``, ``nnz_<task>``, ``entropy_<task>``, ``used_<task>`` and
``load_entropy_<task>`` per task). ``execute_prediction(task)`` runs a ``harness.tasks.Task`` of kind
``"prediction"`` and always returns a row.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .data import DigitsData, DigitsSpec, make_digits
from .problem import PredictionProblem

__all__ = ["KIND", "RUN_KEYS", "STUDY_KEYS", "METRICS", "PER_TASK", "run_params", "problem_of", "train",
           "run_case", "prediction_row", "execute_prediction"]

KIND = "prediction"
RUN_KEYS: tuple[str, ...] = ("gate", "framework", "seed", "split", "problem")
STUDY_KEYS: tuple[str, ...] = ("study", "trial", "sampler", "tuning_seed")
# Per-run metric columns (besides the per-task ones, ``PER_TASK``); the traces are lists over ``eval_steps``.
METRICS: tuple[str, ...] = ("acc_mean", "nnz_mean", "entropy_mean", "final_loss", "first_loss", "train_ms",
                            "eval_steps", "nnz_trace", "acc_trace")
PER_TASK: tuple[str, ...] = ("acc", "nnz", "entropy", "used", "load_entropy")


def run_params(problem: PredictionProblem, problem_name: str, gate: str, framework: str, seed: int, split: str,
               study: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The identifying columns of one run (module docstring); ``study`` defaults to a run outside any study."""
    from harness.recovery.run import check_framework, check_gate

    check_gate(gate)
    check_framework(framework)
    if split not in ("val", "test"):
        raise ValueError(f"split: expected val or test; got {split!r}")
    study = dict(study or {"study": "", "trial": -1, "sampler": "", "tuning_seed": -1})
    params = {"gate": gate, "framework": framework, "seed": int(seed), "split": split, "problem": problem_name}
    params.update({key: study[key] for key in STUDY_KEYS})
    params.update(problem.to_dict())
    return params


def problem_of(params: Mapping[str, Any]) -> PredictionProblem:
    return PredictionProblem.from_dict({k: v for k, v in params.items() if k not in RUN_KEYS + STUDY_KEYS})


@functools.lru_cache(maxsize=4)
def _data(spec: DigitsSpec) -> DigitsData:
    return make_digits(spec)


def train(problem: PredictionProblem, gate: str, framework: str, seed: int, split: str) -> Any:
    """Train with the framework's loop (imported here, lazily; one intra-op thread) and return its result."""
    from harness.recovery.run import limit_threads

    from .steps import run_inputs

    limit_threads(framework)
    run = run_inputs(problem, gate, seed, _data(problem.digits()), split)
    if framework == "torch":
        from . import model_torch as model
    else:
        from . import model_tf as model
    return model.train(run)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def run_case(params: Mapping[str, Any]) -> dict[str, Any]:
    """Train one run and return its metric columns (a diverged run has ``acc_mean`` None)."""
    problem = problem_of(params)
    result = train(problem, params["gate"], params["framework"], params["seed"], params["split"])
    out: dict[str, Any] = {}
    for t, task in enumerate(problem.task_names):
        out[f"acc_{task}"] = float(result.accuracy[t])
        out.update({f"{name}_{task}": float(result.usage[name][t]) for name in PER_TASK[1:]})
    diverged = not math.isfinite(result.final_loss)
    out.update({
        "acc_mean": None if diverged else float(np.mean(result.accuracy)),
        "nnz_mean": float(np.mean(result.usage["nnz"])), "entropy_mean": float(np.mean(result.usage["entropy"])),
        "final_loss": _finite(result.final_loss), "first_loss": _finite(result.first_loss),
        "train_ms": float(result.train_ms), "eval_steps": [int(s) for s in result.eval_steps],
        "nnz_trace": [float(v) for v in result.nnz_trace.mean(axis=1)],
        "acc_trace": [float(v) for v in result.accuracy_trace.mean(axis=1)],
    })
    return out


def prediction_row(suite: str, params: Mapping[str, Any], status: str, error: str | None = None,
                   extra_provenance: Mapping[str, Any] | None = None, **values: Any) -> dict[str, Any]:
    """A results row of kind ``prediction``: ``harness.results.make_row`` once the schema declares the kind,
    else a plain dict with the same common columns."""
    from harness import results, schema

    if KIND in schema.ROW_KINDS:
        return results.make_row(KIND, suite, params, status, error=error, extra_provenance=extra_provenance,
                                **values)
    if status not in schema.STATUSES:
        raise ValueError(f"status: expected one of {', '.join(schema.STATUSES)}; got {status!r}")
    row: dict[str, Any] = {"schema": schema.SCHEMA_VERSION, "kind": KIND, "suite": suite,
                           "case_id": results.case_id(params)}
    row.update(params)
    row.update(values)
    row["status"], row["error"] = status, error
    row["provenance"] = results.provenance(extra_provenance)
    return row


def execute_prediction(task: Any) -> dict[str, Any]:
    """Run one ``harness.tasks.Task`` of kind ``prediction`` (``task.suite``, ``task.params``); always a row."""
    params = dict(task.params)
    try:
        metrics = run_case(params)
        from harness.recovery.suite import framework_versions

        return prediction_row(task.suite, params, "ok", extra_provenance=framework_versions(params["framework"]),
                              **metrics)
    except Exception as exc:  # noqa: BLE001 - a failed run is a failed row; the study goes on
        return prediction_row(task.suite, params, "failed", error=f"{type(exc).__name__}: {exc}".strip())
