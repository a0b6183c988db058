"""The prediction protocol: every gate tuned with the same budget on the validation split, judged on the test split
over held-out seeds.

1. A search space per gate: ``harness.tuning.space.search_space`` restricted to ``PredictionProblem``'s knobs
   (``lr`` for every gate; DSelect-k ``gamma``, ``entropy_reg``, ``dselect_z_init``; hard concrete ``l0_reg``;
   Top-k ``load_balance``; a declared knob the problem lacks, such as ``topk_noisy``, is listed as unavailable).
2. ``trials`` trials per gate, interleaved (trial 0 of every gate, then 1, ...), each suggested by Optuna (TPE with
   ``TPE_STARTUP`` random start-up trials, or random) from a fresh sampler seeded by ``(seed, gate, trial)`` over
   the trials before it, so a resumed study asks what an uninterrupted one would have. A trial trains on every
   tuning seed; its objective is the mean **validation** error ``1 - accuracy`` (averaged over tasks and seeds);
   a run that fails or diverges fails the trial.
3. The best trial of each gate (lowest objective, ties to the earlier) is retrained on the held-out seeds (disjoint
   from the tuning seeds) and scored on the **test** split: mean ± s.e. of the test accuracy per task and averaged,
   and of what the gates did (non-zero weights, entropy, experts used; the sparsity trace over training); paired
   two-sided Wilcoxon against the baseline (Top-k) on the same seeds, Holm-corrected across the gates compared
   (one family per metric; ``harness.tuning.stats.holm``).

A seed fixes the initial parameters, the mini-batch order and hard concrete's noise; the data set is one, fixed by
the problem's ``data_seed`` (as a benchmark's data set is), so every run of a gate pair sees the same test images.
Rows go to one JSONL file; with ``resume`` a run whose case is already there (status ok) is not rerun.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from harness.tuning.seeds import check_seeds

from .problem import PredictionProblem
from .task import execute_prediction, run_params

__all__ = ["SAMPLERS", "HELDOUT_START", "TPE_STARTUP", "PredictionStudy", "space_of", "suggest", "run_study",
           "verdict", "read_prediction_rows", "objective", "write_json"]

SAMPLERS: tuple[str, ...] = ("tpe", "random")
HELDOUT_START = 1000
TPE_STARTUP = 5


@dataclass(frozen=True)
class PredictionStudy:
    """One study: the base ``problem``, the ``gates`` (the ``baseline`` added when missing), one ``framework``,
    ``trials`` per gate (0: no tuning, every gate at the base problem's knobs), disjoint ``tune_seeds`` and
    ``heldout_seeds``, the ``sampler`` and its ``seed``, and a ``name`` (the ``study`` column)."""

    problem: PredictionProblem = field(default_factory=PredictionProblem)
    gates: tuple[str, ...] = ("softmax", "topk", "dselect_k", "hard_concrete")
    framework: str = "torch"
    trials: int = 8
    tune_seeds: tuple[int, ...] = (0,)
    heldout_seeds: tuple[int, ...] = tuple(range(HELDOUT_START, HELDOUT_START + 10))
    sampler: str = "tpe"
    seed: int = 0
    baseline: str = "topk"
    name: str = "prediction"
    problem_name: str = "digits2"

    def __post_init__(self) -> None:
        from harness.recovery.run import check_framework, check_gate

        if not isinstance(self.problem, PredictionProblem):
            raise ValueError(f"problem: expected a PredictionProblem; got {self.problem!r}")
        gates = tuple(check_gate(g) for g in (*self.gates, self.baseline))[:-1]
        if len(set(gates)) != len(gates) or not gates:
            raise ValueError(f"gates: expected distinct gates; got {list(gates)!r}")
        object.__setattr__(self, "gates", gates if self.baseline in gates else (*gates, self.baseline))
        check_framework(self.framework)
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 0:
            raise ValueError(f"trials: expected an integer >= 0; got {self.trials!r}")
        tune, heldout = check_seeds("tune_seeds", self.tune_seeds), check_seeds("heldout_seeds", self.heldout_seeds)
        if set(tune) & set(heldout):
            raise ValueError(f"heldout_seeds: expected seeds disjoint from tune_seeds; got "
                             f"{sorted(set(tune) & set(heldout))} in both")
        object.__setattr__(self, "tune_seeds", tune)
        object.__setattr__(self, "heldout_seeds", heldout)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler: expected one of {', '.join(SAMPLERS)}; got {self.sampler!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: expected an integer >= 0; got {self.seed!r}")

    @property
    def total_runs(self) -> int:
        return len(self.gates) * (self.trials * len(self.tune_seeds) + len(self.heldout_seeds))

    def params(self, gate: str, values: Mapping[str, Any], trial: int, split: str, seed: int) -> dict[str, Any]:
        study = {"study": self.name, "trial": int(trial), "sampler": self.sampler, "tuning_seed": self.seed}
        return run_params(self.problem.replace(**values), self.problem_name, gate, self.framework, seed, split,
                          study)


def space_of(gate: str) -> Any:
    """The gate's search space over ``PredictionProblem``'s knobs (``harness.tuning.space``)."""
    from harness.tuning.space import search_space

    return search_space(gate, frozenset(f.name for f in dataclasses.fields(PredictionProblem)))


def suggest(study: PredictionStudy, space: Any, history: Sequence[tuple[dict[str, Any], float | None]],
            number: int) -> dict[str, Any]:
    """Trial ``number``'s values: the earlier trials ``(values, objective or None)`` told to a fresh Optuna study
    whose sampler is seeded by ``(seed, gate, number)``, then ``ask``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = int(np.random.SeedSequence([study.seed, zlib.crc32(space.gate.encode()), number]).generate_state(1)[0])
    sampler = (optuna.samplers.RandomSampler(seed=seed) if study.sampler == "random"
               else optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP))
    optuna_study = optuna.create_study(direction="minimize", sampler=sampler)
    distributions = space.distributions()
    for values, objective in history:
        state = optuna.trial.TrialState.COMPLETE if objective is not None else optuna.trial.TrialState.FAIL
        optuna_study.add_trial(optuna.trial.create_trial(state=state, value=objective, params=values,
                                                         distributions=distributions))
    return space.check(optuna_study.ask(distributions).params)


def read_prediction_rows(path: str | Path) -> list[dict[str, Any]]:
    """The prediction rows of a JSONL file (newest last; lines that are not prediction rows are left out). A
    reader of its own until ``harness.results.read_rows`` knows the kind."""
    path, rows = Path(path), []
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("kind") == "prediction" and isinstance(row.get("case_id"), str):
            rows.append(row)
    return rows


class _Runner:
    """Runs a study's cases one after another, appending each row to ``path``; a case already there (ok) is
    reused. ``on_row(row, done, total)`` after each run."""

    def __init__(self, study: PredictionStudy, path: Path, resume: bool, on_row: Callable | None) -> None:
        from harness.results import row_json

        self.study, self.path, self.on_row, self.row_json, self.done = study, path, on_row, row_json, 0
        if path.exists() and path.stat().st_size > 0 and not resume:
            raise ValueError(f"out: {path} already has rows; pass resume to continue it or use another file")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.rows = {row["case_id"]: row for row in read_prediction_rows(path) if row.get("status") == "ok"}

    def run(self, params: dict[str, Any]) -> dict[str, Any]:
        from harness.results import case_id

        row = self.rows.get(case_id(params))
        if row is None:  # execute_prediction reads a task's suite and params (no harness.tasks: no import cycle)
            row = execute_prediction(SimpleNamespace(kind="prediction", suite=self.study.name, params=params))
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(self.row_json(row) + "\n")
            self.rows[row["case_id"]] = row
        self.done += 1
        if self.on_row is not None:
            self.on_row(row, self.done, self.study.total_runs)
        return row


def objective(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """A trial's value from its validation rows: mean ``1 - acc_mean``; ``None`` if a run failed or diverged."""
    values = [row.get("acc_mean") if row.get("status") == "ok" else None for row in rows]
    if any(v is None or not math.isfinite(float(v)) for v in values):
        return None
    return float(np.mean([1.0 - float(v) for v in values]))


def _tune(study: PredictionStudy, runner: _Runner) -> dict[str, list[tuple[dict[str, Any], float | None]]]:
    spaces = {gate: space_of(gate) for gate in study.gates}
    history: dict[str, list[tuple[dict[str, Any], float | None]]] = {gate: [] for gate in study.gates}
    for number in range(study.trials):
        for gate in study.gates:
            values = suggest(study, spaces[gate], history[gate], number)
            rows = [runner.run(study.params(gate, values, number, "val", s)) for s in study.tune_seeds]
            history[gate].append((values, objective(rows)))
    return history


def _best(history: Sequence[tuple[dict[str, Any], float | None]]) -> tuple[int, dict[str, Any], float | None]:
    """``(trial, values, objective)`` of the best trial (ties to the earlier); ``(-1, {}, None)`` without one."""
    scored = [(value, number) for number, (_, value) in enumerate(history) if value is not None]
    if not scored:
        return -1, {}, None
    value, number = min(scored)
    return number, history[number][0], value


def run_study(study: PredictionStudy, out: str | Path, *, resume: bool = False,
              on_row: Callable[[dict[str, Any], int, int], None] | None = None) -> dict[str, Any]:
    """Run (or continue) the study, rows into ``out`` (a ``.jsonl`` file, or ``out/<name>.jsonl``); return its
    ``verdict`` with ``best`` per gate, the trial values, the results path and the wall time."""
    path = Path(out) if str(out).endswith(".jsonl") else Path(out) / f"{study.name}.jsonl"
    runner, start = _Runner(study, path, resume, on_row), time.perf_counter()
    history = _tune(study, runner) if study.trials else {gate: [] for gate in study.gates}
    heldout, best = {}, {}
    for gate in study.gates:
        number, values, value = _best(history[gate]) if study.trials else (-1, {}, None)
        best[gate] = {"trial": number, "values": values, "val_error": value, "space": space_of(gate).describe(),
                      "trial_values": [v for _, v in history[gate]]}
        if study.trials and number < 0:
            heldout[gate] = []
            continue
        heldout[gate] = [runner.run(study.params(gate, values, number, "test", s)) for s in study.heldout_seeds]
    result = verdict(heldout, study.baseline, study.problem.task_names)
    for gate, info in best.items():
        result["gates"][gate]["best"] = info
    result.update({"study": study.name, "framework": study.framework, "problem_name": study.problem_name,
                   "problem": study.problem.to_dict(), "trials": study.trials, "tune_seeds": list(study.tune_seeds),
                   "heldout_seeds": list(study.heldout_seeds), "sampler": study.sampler, "seed": study.seed,
                   "results": str(path), "wall_s": time.perf_counter() - start})
    return result


def _by_seed(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[int, float]:
    return {int(r["seed"]): (math.nan if r.get(metric) is None else float(r[metric])) for r in rows
            if r.get("status") == "ok"}


def _summary(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> dict[str, dict[str, float]]:
    from harness.recovery.metrics import mean_se

    out = {}
    for metric in metrics:
        mean, se, count = mean_se(list(_by_seed(rows, metric).values()))
        out[metric] = {"mean": mean, "se": se, "count": count}
    return out


def _trace(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, list[float]]:
    ok = [r for r in rows if r.get("status") == "ok" and r.get(key)]
    if not ok:
        return {"eval_steps": [], "mean": []}
    return {"eval_steps": list(ok[0]["eval_steps"]),
            "mean": [float(v) for v in np.mean([r[key] for r in ok], axis=0)]}


def verdict(runs: Mapping[str, Sequence[Mapping[str, Any]]], baseline: str,
            tasks: Sequence[str]) -> dict[str, Any]:
    """Per gate: mean ± s.e. over the held-out seeds (``summary``), the sparsity and accuracy traces averaged over
    seeds, and for every gate but ``baseline`` the paired Wilcoxon test of each accuracy against it with Holm's
    correction across the gates (``tests.<metric>``: ``median_diff``, ``p_value``, ``p_holm``, ``pairs``)."""
    from harness.recovery.metrics import paired_wilcoxon
    from harness.tuning.stats import holm

    if baseline not in runs:
        raise ValueError(f"baseline: expected one of the gates compared ({', '.join(runs)}); got {baseline!r}")
    tested = ["acc_mean", *(f"acc_{t}" for t in tasks)]
    shown = [*tested, "nnz_mean", "entropy_mean", *(f"{m}_{t}" for m in ("nnz", "entropy", "used") for t in tasks),
             "train_ms"]
    gates = {gate: {"summary": _summary(rows, shown), "tests": {}, "nnz_trace": _trace(rows, "nnz_trace"),
                    "acc_trace": _trace(rows, "acc_trace"), "runs": len(rows)} for gate, rows in runs.items()}
    others = [gate for gate in runs if gate != baseline]
    for metric in tested:
        base, tests = _by_seed(runs[baseline], metric), {}
        for gate in others:
            mine = _by_seed(runs[gate], metric)
            seeds = sorted(set(mine) & set(base))
            tests[gate] = paired_wilcoxon([mine[s] for s in seeds], [base[s] for s in seeds]) if seeds else {
                "median_diff": math.nan, "statistic": math.nan, "p_value": math.nan, "pairs": 0}
        for gate, p_holm in zip(others, holm([tests[g]["p_value"] for g in others]), strict=True):
            gates[gate]["tests"][metric] = {**tests[gate], "p_holm": p_holm}
    return {"baseline": baseline, "tasks": list(tasks), "tested": tested, "gates": gates}


def write_json(result: Mapping[str, Any], path: str | Path) -> None:
    from harness.recovery.run import json_safe

    Path(path).write_text(json.dumps(json_safe(result), indent=1) + "\n", encoding="utf-8")
