"""The tuning protocol: every gate tuned with the same budget on tuning seeds, judged on held-out seeds.

For each gate of a ``TuningConfig``, ``trials`` trials (the same number for every gate, interleaved: trial 0 of every
gate, then trial 1, ...). A trial is one configuration of the gate's search space (``space.search_space``) sampled
by Optuna (a seeded ``TPESampler`` or ``RandomSampler``), trained on every tuning seed and scored by its mean
validation MSE (``validation.trial_data``: a fresh split of the training distribution; no test data, no planted
support). The best trial of each gate (lowest mean validation MSE; ties to the earlier trial) is then rerun on the
held-out seeds (disjoint from the tuning seeds: checked) and judged there (``stats.compare_gates``: mean ± s.e. of
F1, exact-support rate and test MSE; paired Wilcoxon against the baseline gate, Holm-corrected across gates).

Every run is a row of one results file (``trial.py``), and the file is the study's only state: a killed study
rerun with ``resume`` reads its trials back from the rows, re-tells the finished ones to Optuna
(``study.add_trial(create_trial(...))``) and carries on. Each suggestion comes from a fresh sampler seeded by
``(seed, gate, trial number)`` over the trials before it, so a resumed study asks exactly what an uninterrupted one
would have; a trial cut short is finished with its own parameters (read from its rows), running only its missing
seeds.
"""

from __future__ import annotations

import dataclasses
import math
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.recovery.problem import RecoveryProblem

from .seeds import check_seeds
from .space import SearchSpace, search_space
from .trial import STUDY_KEYS, TuningExecutor, task_params

__all__ = ["SAMPLERS", "HELDOUT_START", "TuningConfig", "TrialRecord", "default_gates", "trial_records",
           "trial_value", "nnz_violation", "suggest", "best_trial", "check_budgets", "check_seeds", "run_tuning",
           "collect", "results_path"]

SAMPLERS: tuple[str, ...] = ("tpe", "random")
# Held-out seeds start here by default, far from the tuning seeds (0, 1, ...) and the recovery suites' (0-9).
HELDOUT_START = 1000
# TPE's random start-up trials (fixed, not a share of the budget: a study resumed with more trials asks what an
# uninterrupted one would have).
TPE_STARTUP = 5
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def default_gates() -> tuple[str, ...]:
    """Every gate the recovery study can score (``harness.recovery.metrics.SELECTIONS``), in ``GATE_NAMES`` order."""
    from gates import GATE_NAMES
    from harness.recovery.metrics import SELECTIONS

    return tuple(gate for gate in GATE_NAMES if gate in SELECTIONS)


@dataclass(frozen=True)
class TuningConfig:
    """One study: the base ``problem`` (its knobs outside a gate's space stay as given), the ``gates`` (the
    ``baseline`` is added when missing), one ``framework``, ``trials`` per gate, ``tune_seeds`` and
    ``heldout_seeds`` (disjoint), the ``sampler`` (``tpe`` or ``random``) and its ``seed``, and a ``name``
    (the ``study`` column and the results file's name). ``max_nnz``: a trial whose gate keeps more experts than
    this on average on a tuning seed (validation-time selection, no support needed) is infeasible: never the best,
    and told to Optuna as a violated constraint (``nnz_violation``); None: no such constraint."""

    problem: RecoveryProblem = field(default_factory=RecoveryProblem)
    gates: tuple[str, ...] = ()
    framework: str = "torch"
    trials: int = 20
    tune_seeds: tuple[int, ...] = (0, 1, 2)
    heldout_seeds: tuple[int, ...] = tuple(range(HELDOUT_START, HELDOUT_START + 10))
    sampler: str = "tpe"
    seed: int = 0
    baseline: str = "topk"
    name: str = "tuning"
    problem_name: str = "default"
    max_nnz: float | None = None

    def __post_init__(self) -> None:
        from harness.recovery.run import check_framework, check_gate

        if not isinstance(self.problem, RecoveryProblem):
            raise ValueError(f"problem: expected a RecoveryProblem; got {self.problem!r}")
        gates = tuple(self.gates) or default_gates()
        for gate in gates + (self.baseline,):
            check_gate(gate)
        if len(set(gates)) != len(gates):
            raise ValueError(f"gates: expected distinct gates; got {list(gates)!r}")
        object.__setattr__(self, "gates", gates if self.baseline in gates else (*gates, self.baseline))
        check_framework(self.framework)
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise ValueError(f"trials: expected an integer >= 1; got {self.trials!r}")
        tune, heldout = check_seeds("tune_seeds", self.tune_seeds), check_seeds("heldout_seeds", self.heldout_seeds)
        overlap = sorted(set(tune) & set(heldout))
        if overlap:
            raise ValueError(f"heldout_seeds: expected seeds disjoint from tune_seeds; got {overlap} in both")
        object.__setattr__(self, "tune_seeds", tune)
        object.__setattr__(self, "heldout_seeds", heldout)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler: expected one of {', '.join(SAMPLERS)}; got {self.sampler!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: expected an integer >= 0; got {self.seed!r}")
        if self.max_nnz is not None and (isinstance(self.max_nnz, bool) or not isinstance(self.max_nnz, (int, float))
                                         or not self.max_nnz > 0):
            raise ValueError(f"max_nnz: expected a number > 0 or None; got {self.max_nnz!r}")
        for key in ("name", "problem_name"):
            if not isinstance(getattr(self, key), str) or not _NAME.match(getattr(self, key)):
                raise ValueError(f"{key}: expected letters, digits, '_', '-' or '.'; got {getattr(self, key)!r}")

    @property
    def total_runs(self) -> int:
        return len(self.gates) * (self.trials * len(self.tune_seeds) + len(self.heldout_seeds))

    def study_columns(self, trial: int, split: str) -> dict[str, Any]:
        return {"study": self.name, "trial": int(trial), "split": split, "sampler": self.sampler,
                "tuning_seed": self.seed}

    def run_params(self, gate: str, values: Mapping[str, Any], trial: int, split: str, seed: int) -> dict[str, Any]:
        """The task params of one run: the base problem with the trial's ``values``, on ``seed``."""
        problem = self.problem.replace(**values)
        return task_params(problem, self.problem_name, gate, self.framework, seed, self.study_columns(trial, split))


def results_path(config: TuningConfig, out: str | Path) -> Path:
    """``out`` itself when it names a ``.jsonl`` file, else ``out/<study name>.jsonl``."""
    out = Path(out)
    return out if out.suffix == ".jsonl" else out / f"{config.name}.jsonl"


# ------------------------------------------------------------------------------------------------------------------
# Trials from rows.
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class TrialRecord:
    """One trial of one gate as its rows say: its number, parameters, and the tuning rows per seed."""

    number: int
    params: dict[str, Any]
    rows: dict[int, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    def complete(self, seeds: Sequence[int]) -> bool:
        return all(seed in self.rows for seed in seeds)


def _of_study(row: Mapping[str, Any], config: TuningConfig, space: SearchSpace, split: str) -> bool:
    """Whether ``row`` is a run of ``config``'s study of ``space.gate`` on ``split`` (same base problem)."""
    if row.get("kind") != "recovery" or row.get("gate") != space.gate or row.get("split") != split:
        return False
    if any(row.get(key) != value for key, value in config.study_columns(0, split).items() if key != "trial"):
        return False
    if row.get("framework") != config.framework or row.get("problem") != config.problem_name:
        return False
    base = config.problem.to_dict()
    return all(row.get(knob) == value for knob, value in base.items() if knob not in space.knobs)


def _newest(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return list({row["case_id"]: row for row in rows}.values())


def trial_records(rows: Sequence[Mapping[str, Any]], config: TuningConfig, space: SearchSpace,
                  split: str = "tune") -> dict[int, TrialRecord]:
    """The trials of ``space.gate`` in ``rows`` (newest row per case), by number; seeds outside the config's are
    ignored (``split="heldout"``: the held-out reruns, by the trial they rerun)."""
    seeds = set(config.tune_seeds if split == "tune" else config.heldout_seeds)
    out: dict[int, TrialRecord] = {}
    for row in _newest(rows):
        if not _of_study(row, config, space, split) or row.get("seed") not in seeds:
            continue
        params = {knob: row.get(knob) for knob in space.knobs}
        record = out.setdefault(int(row["trial"]), TrialRecord(int(row["trial"]), params))
        if record.params != params:
            raise ValueError(f"trial: {space.gate} trial {row['trial']} has rows with different parameters "
                             f"({record.params} and {params}); the results file mixes studies")
        record.rows[int(row["seed"])] = row
    return out


def nnz_violation(rows: Sequence[Mapping[str, Any]], max_nnz: float | None) -> float | None:
    """How far a trial's gate is over the sparsity limit: the largest ``nnz - max_nnz`` over its tuning rows
    (``<= 0``: within it, on every tuning seed); ``None`` without a limit or without ``nnz`` values. Optuna's
    constrained TPE reads it (``constraints``), so that trials move towards configurations that become sparse."""
    if max_nnz is None:
        return None
    values = [float(row["nnz"]) for row in rows if row.get("nnz") is not None and math.isfinite(float(row["nnz"]))]
    return max(values) - float(max_nnz) if values else None


def trial_value(rows: Sequence[Mapping[str, Any]], max_nnz: float | None = None) -> float | None:
    """The objective of a trial from its tuning rows: the mean validation MSE over the tuning seeds, ``None``
    (a failed trial) if a run failed or diverged or, with ``max_nnz``, if its gate kept more experts than that on
    average (``nnz`` of the final selection, read without the support). Reads ``val_mse`` and ``nnz`` only."""
    values = []
    for row in rows:
        if row.get("split") != "tune":
            raise ValueError(f"rows: expected tuning rows only; got a {row.get('split')!r} row")
        value = row.get("val_mse") if row.get("status") == "ok" else None
        if value is None or not math.isfinite(float(value)):
            return None
        if max_nnz is not None and not float(row.get("nnz") or math.inf) <= max_nnz:
            return None
        values.append(float(value))
    return float(np.mean(values)) if values else None


# ------------------------------------------------------------------------------------------------------------------
# Optuna.
# ------------------------------------------------------------------------------------------------------------------
def _sampler(config: TuningConfig, gate: str, number: int) -> Any:
    """A fresh sampler for trial ``number`` of ``gate``, seeded by ``(seed, gate, number)``."""
    import optuna

    seed = int(np.random.SeedSequence([config.seed, zlib.crc32(gate.encode()), number]).generate_state(1)[0])
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP)


def suggest(config: TuningConfig, space: SearchSpace, history: Sequence[TrialRecord], number: int) -> dict[str, Any]:
    """Trial ``number``'s parameters: the finished trials ``history`` told to a fresh Optuna study, then ``ask``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=_sampler(config, space.gate, number))
    distributions = space.distributions()
    for record in history:
        rows = [record.rows[s] for s in config.tune_seeds]
        value, over = trial_value(rows), nnz_violation(rows, config.max_nnz)
        if value is None or (config.max_nnz is not None and over is None):
            study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params=record.params,
                                                      distributions=distributions))
            continue
        constraints = None if over is None else {"max_nnz": over}
        study.add_trial(optuna.trial.create_trial(value=value, params=record.params, distributions=distributions,
                                                  constraints=constraints))
    return space.check(study.ask(distributions).params)


def best_trial(records: Mapping[int, TrialRecord], config: TuningConfig) -> tuple[int, float] | None:
    """The number and value of the best of the first ``config.trials`` trials (lowest value; ties to the lower
    number); ``None`` if every one failed."""
    scored = []
    for number in sorted(records):
        if number < config.trials and records[number].complete(config.tune_seeds):
            value = trial_value([records[number].rows[s] for s in config.tune_seeds], config.max_nnz)
            if value is not None:
                scored.append((value, number))
    if not scored:
        return None
    value, number = min(scored)
    return number, value


def check_budgets(counts: Mapping[str, int], trials: int) -> None:
    """Every gate had exactly ``trials`` finished trials (``ValueError`` naming the gates that did not)."""
    unequal = {gate: count for gate, count in counts.items() if count != trials}
    if unequal:
        raise ValueError(f"budget: expected {trials} finished trials for every gate; got {unequal}")


# ------------------------------------------------------------------------------------------------------------------
# Running.
# ------------------------------------------------------------------------------------------------------------------
def _run(config: TuningConfig, path: Path, params: Sequence[dict[str, Any]],
         on_row: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
    """Run ``params`` through the generic runner into ``path`` (resume: cases done in the file are skipped)."""
    from harness.runner import run_suite
    from harness.suite import Suite

    suite = Suite(name=config.name, kind="recovery", settings=None, raw={}, cases=tuple(params))
    return run_suite(suite, path, resume=True, executor=TuningExecutor(), on_row=on_row).rows


def _prepare(path: Path, resume: bool, fresh: bool) -> None:
    if path.exists() and path.stat().st_size > 0 and not resume:
        if not fresh:
            raise ValueError(f"out: {path} already has rows; pass resume to continue it or fresh to start over")
        from harness.runner import backup_path

        path.rename(backup_path(path))
    path.parent.mkdir(parents=True, exist_ok=True)


def _trial_step(config: TuningConfig, path: Path, space: SearchSpace, number: int,
                rows: list[dict[str, Any]], on_row: Callable | None) -> list[dict[str, Any]]:
    """Finish trial ``number`` of ``space.gate``: nothing if its rows are all there; its missing seeds if it was
    cut short; else a new suggestion on every tuning seed."""
    records = trial_records(rows, config, space)
    record = records.get(number)
    if record is not None and record.complete(config.tune_seeds):
        return []
    if record is not None:
        values = record.params
    else:
        values = suggest(config, space, [records[i] for i in range(number)], number)
    runs = [config.run_params(space.gate, values, number, "tune", seed) for seed in config.tune_seeds]
    return _run(config, path, runs, on_row)


def _done_runs(rows: Sequence[Mapping[str, Any]], config: TuningConfig, spaces: Mapping[str, SearchSpace]) -> int:
    """Runs of this study already in the file (for progress: tuning runs of the budget, held-out runs)."""
    done = 0
    for space in spaces.values():
        done += sum(len(r.rows) for n, r in trial_records(rows, config, space).items() if n < config.trials)
        done += min(len(config.heldout_seeds), sum(len(r.rows) for r in
                                                    trial_records(rows, config, space, "heldout").values()))
    return done


def run_tuning(config: TuningConfig, out: str | Path, *, resume: bool = False, fresh: bool = False,
               on_plan: Callable[[int, int], None] | None = None,
               on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or, with ``resume``, continue) the study into ``results_path(config, out)``; return ``collect``'s
    verdict. ``on_plan(total_runs, done_runs)`` once at the start, ``on_row(row)`` after each run."""
    from harness.results import read_rows

    path = results_path(config, out)
    _prepare(path, resume, fresh)
    rows: list[dict[str, Any]] = read_rows(path).rows if path.exists() else []
    spaces = {gate: search_space(gate) for gate in config.gates}
    if on_plan is not None:
        on_plan(config.total_runs, _done_runs(rows, config, spaces))
    for number in range(config.trials):
        for gate in config.gates:
            rows += _trial_step(config, path, spaces[gate], number, rows, on_row)
    for gate in config.gates:
        best = best_trial(trial_records(rows, config, spaces[gate]), config)
        if best is not None:
            values = trial_records(rows, config, spaces[gate])[best[0]].params
            runs = [config.run_params(gate, values, best[0], "heldout", s) for s in config.heldout_seeds]
            rows += _run(config, path, runs, on_row)
    result = collect(config, rows, spaces)
    result["results"] = str(path)
    return result


def _gate_result(config: TuningConfig, rows: Sequence[Mapping[str, Any]], space: SearchSpace) -> dict[str, Any]:
    records = {n: r for n, r in trial_records(rows, config, space).items()
               if n < config.trials and r.complete(config.tune_seeds)}
    values = {n: trial_value([r.rows[s] for s in config.tune_seeds], config.max_nnz) for n, r in records.items()}
    best = best_trial(records, config)
    out: dict[str, Any] = {
        "space": space.describe(), "tuned": list(space.knobs), "unavailable": list(space.unavailable),
        "trials": len(records), "failed_trials": sum(v is None for v in values.values()),
        "infeasible_trials": sum(trial_value([r.rows[s] for s in config.tune_seeds]) is not None
                                 and values[n] is None for n, r in records.items()),
        "trial_values": [values[n] for n in sorted(values)], "best": None, "runs": [],
    }
    if best is None:
        return out
    out["best"] = {"trial": best[0], "val_mse": best[1], "params": records[best[0]].params}
    heldout = trial_records(rows, config, space, "heldout").get(best[0])
    if heldout is not None:
        keep = ("seed", "status", "f1", "precision", "recall", "exact_support_rate", "test_mse", "nnz")
        out["runs"] = [{key: heldout.rows[s].get(key) for key in keep} for s in sorted(heldout.rows)]
    return out


def collect(config: TuningConfig, rows: Sequence[Mapping[str, Any]],
            spaces: Mapping[str, SearchSpace] | None = None) -> dict[str, Any]:
    """The study's verdict from its rows: per gate the space, trial values, best trial and parameters, held-out
    runs, summary and tests against the baseline (``stats.compare_gates``). Checks equal budgets."""
    from .stats import compare_gates

    spaces = spaces or {gate: search_space(gate) for gate in config.gates}
    gates = {gate: _gate_result(config, rows, spaces[gate]) for gate in config.gates}
    check_budgets({gate: result["trials"] for gate, result in gates.items()}, config.trials)
    ok_runs = {gate: [run for run in result["runs"] if run["status"] == "ok"] for gate, result in gates.items()}
    verdict = compare_gates(ok_runs, config.baseline)
    for gate, result in gates.items():
        result.update(verdict[gate])
    return {
        "study": config.name, "framework": config.framework, "problem_name": config.problem_name,
        "problem": config.problem.to_dict(), "sampler": config.sampler, "seed": config.seed,
        "trials": config.trials, "tune_seeds": list(config.tune_seeds), "heldout_seeds": list(config.heldout_seeds),
        "baseline": config.baseline, "max_nnz": config.max_nnz,
        "objective": "mean validation MSE over the tuning seeds (lower is better)"
                     + ("" if config.max_nnz is None else f"; trials with mean nnz > {config.max_nnz:g} fail"),
        "gates": gates, "study_keys": list(STUDY_KEYS),
    }
