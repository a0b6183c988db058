"""Run recovery experiments: one (gate, framework, seed), or several seeds (trained together, ``train_many``) with
a summary.

Frameworks are imported only when a run needs them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from gates import FRAMEWORKS, GATE_NAMES
from harness.schema import RECOVERY_METRICS

from .data import PlantedData, generate
from .metrics import (
    SELECTIONS,
    match_experts,
    mean_se,
    paired_wilcoxon,
    steps_to_support,
    support_changes,
    support_changes_trace,
    support_scores,
    to_planted_order,
)
from .problem import RecoveryProblem
from .steps import TrainResult

# Metric columns of a run summarised over seeds, in display order (declared in harness.schema).
METRICS: tuple[str, ...] = RECOVERY_METRICS


def check_framework(framework: Any) -> str:
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework: expected one of {', '.join(FRAMEWORKS)}; got {framework!r}")
    return framework


def check_gate(gate: Any) -> str:
    if gate not in GATE_NAMES:
        raise ValueError(f"gate: expected one of {', '.join(GATE_NAMES)}; got {gate!r}")
    return gate


_THREADS_LIMITED: set[str] = set()


def limit_threads(framework: str) -> None:
    """Recovery problems are tiny (tensors of a few hundred numbers): one intra-op thread is faster than many
    (no synchronisation) and keeps runs reproducible. Done once per process and framework, before its first run.

    TensorFlow: one intra-op and one inter-op thread, set before TF initialises its runtime (if it already has,
    e.g. after timing cases in the same process, its settings stay), and its logger quietened (each run traces its
    own ``tf.function``s, and TF warns about retracing). PyTorch: ``train_torch.train`` sets one thread for the
    duration of each run and restores the previous count afterwards.
    """
    if framework in _THREADS_LIMITED:
        return
    _THREADS_LIMITED.add(framework)
    if framework == "tf":
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        try:
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow's runtime is already initialised in this process: keep its settings
            pass


def train(data: PlantedData, gate: str, framework: str) -> TrainResult:
    """Train with the framework's loop (imported here, lazily), one intra-op thread (``limit_threads``)."""
    check_gate(gate)
    limit_threads(check_framework(framework))
    if framework == "torch":
        from . import train_torch as loop
    else:
        from . import train_tf as loop
    return loop.train(data, gate)


def train_many(datas: Sequence[PlantedData], gate: str, framework: str) -> list[TrainResult]:
    """Train ``gate`` on every run of ``datas`` (one ``PlantedData`` per run): all at once with the batched loop
    (``batch``: a leading run axis, per-run learning rates and Adam knobs) when there are several runs that can share
    a batch (``batch.batchable``, problems equal but for ``batch.RUN_KNOBS``), else one after another (``train``).
    The results are the one-run loop's within float rounding."""
    from .batch import batch_key, batchable

    check_gate(gate)
    limit_threads(check_framework(framework))
    datas = list(datas)
    if len(datas) < 2 or len({batch_key(d.problem) for d in datas}) > 1 or not batchable(datas[0].problem, gate):
        return [train(data, gate, framework) for data in datas]
    if framework == "torch":
        from . import train_batched_torch as loop
    else:
        from . import train_batched_tf as loop
    return loop.train_batched(datas, gate)


def score(data: PlantedData, gate: str, result: TrainResult) -> dict[str, Any]:
    """The metrics of a finished run (see ``METRICS``), plus ``selection``, the per-evaluation
    ``support_changes_trace`` with its ``eval_steps`` (lists, one value per evaluation) and, for learned
    experts, the mean correlation of the matched experts. Learned experts are matched to planted ones
    (Hungarian, on test-output correlation) and selections are re-indexed to the planted order before scoring."""
    pr = data.problem
    history = result.history
    out: dict[str, Any] = {}
    if result.learned_f_test is not None:
        perm, corr = match_experts(result.learned_f_test, data.f_test)
        history = to_planted_order(history, perm)
        out["matched_corr"] = float(corr.mean())
    planted = data.test_support
    out.update(support_scores(history[-1], planted))
    out["steps_to_support"] = steps_to_support(history, planted, result.eval_steps)
    out["support_changes"] = support_changes(history)
    # Per-evaluation trace of the same quantity (the report's "support stability over training" curves); changes
    # do not depend on the expert order, so the model's order serves for learned experts too.
    out["support_changes_trace"] = support_changes_trace(result.history, result.initial_selection)
    out["eval_steps"] = [int(s) for s in result.eval_steps]
    out["test_mse"] = result.test_mse
    out["final_loss"] = result.final_loss
    out["train_ms"] = result.train_ms
    out["selection"] = SELECTIONS[gate]
    out["noise_floor_mse"] = pr.noise**2
    return out


def run_one(problem: RecoveryProblem, gate: str, framework: str, seed: int,
            data: PlantedData | None = None) -> dict[str, Any]:
    """Generate (or reuse) the seed's data, train, and score: one flat dict of metrics."""
    data = data if data is not None else generate(problem, seed)
    return score(data, gate, train(data, gate, framework))


def summarise(runs: Sequence[dict[str, Any]], metrics: Iterable[str] = METRICS) -> dict[str, Any]:
    """Mean, standard error and count of each metric over runs (finite values only: ``steps_to_support`` is
    ``nan`` for runs that never settle on the right support, and ``count`` says how many did)."""
    out: dict[str, Any] = {}
    for name in metrics:
        mean, se, count = mean_se([run[name] for run in runs])
        out[name] = {"mean": mean, "se": se, "count": count}
    return out


def compare_to_baseline(runs: Sequence[dict[str, Any]], baseline_runs: Sequence[dict[str, Any]],
                        metric: str = "f1") -> dict[str, Any]:
    """Paired Wilcoxon signed-rank test of ``metric`` against the baseline's runs on the same seeds."""
    by_seed = {run["seed"]: run[metric] for run in baseline_runs}
    seeds = [run["seed"] for run in runs if run["seed"] in by_seed]
    values = [next(r[metric] for r in runs if r["seed"] == s) for s in seeds]
    return paired_wilcoxon(values, [by_seed[s] for s in seeds])


def _runs(datas: Sequence[PlantedData], gate: str, framework: str, progress: Any) -> list[dict[str, Any]]:
    runs = []
    for data, result in zip(datas, train_many(datas, gate, framework), strict=True):
        runs.append({"seed": int(data.seed), **score(data, gate, result)})
        if progress:
            progress()
    return runs


def run_seeds(problem: RecoveryProblem, gate: str, framework: str, seeds: Sequence[int],
              baseline: str | None = None, progress: Any = None) -> dict[str, Any]:
    """Run ``gate`` (and the ``baseline`` gate, if any) on every seed, the seeds of a gate trained together
    (``train_many``); return per-seed runs, their summary and the paired test against the baseline.
    ``progress``: optional callable invoked after each run."""
    datas = [generate(problem, seed) for seed in seeds]
    runs = _runs(datas, gate, framework, progress)
    baseline_runs = [] if baseline is None else _runs(datas, baseline, framework, progress)
    out: dict[str, Any] = {
        "gate": gate, "framework": framework, "selection": SELECTIONS[gate], "seeds": [int(s) for s in seeds],
        "problem": problem.to_dict(), "runs": runs, "mean": summarise(runs),
    }
    out["f1"] = out["mean"]["f1"]["mean"]
    if baseline is not None:
        out["baseline"] = {"gate": baseline, "runs": baseline_runs, "mean": summarise(baseline_runs),
                           "wilcoxon_f1": compare_to_baseline(runs, baseline_runs)}
    return out


def json_safe(value: Any) -> Any:
    """NaN and infinities become ``None`` so that the document is strict JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
