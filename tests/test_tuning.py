"""The tuning protocol (harness.tuning): search spaces honoured, trials blind to held-out seeds, the test split and
the planted support, resume without redoing finished runs, equal budgets, Holm's correction, suite files, the CLI.

Most tests replace the training loop (``harness.tuning.trial.train_on``, the one seam every run of a study goes
through) by a fake that records what it was given and returns a made-up result at once; one test trains for real.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from harness.recovery.data import generate
from harness.recovery.problem import RecoveryProblem
from harness.recovery.steps import TrainResult
from harness.results import read_rows
from harness.tuning import space as space_mod
from harness.tuning import study as study_mod
from harness.tuning import trial as trial_mod
from harness.tuning.space import Param, search_space
from harness.tuning.stats import compare_gates, holm
from harness.tuning.study import TuningConfig, check_budgets, run_tuning
from harness.tuning.suite import load_tuning_suite, tuning_config
from harness.tuning.validation import cluster_means, trial_data, validation_split

ROOT = Path(__file__).resolve().parent.parent
TINY = RecoveryProblem(experts=6, k=2, tasks=4, clusters=2, input_dim=4, samples=64, test_samples=32, steps=4,
                       batch=16, eval_every=2)


class FakeTrain:
    """Stands in for the training loop: records ``(gate, data)`` per call; the "validation MSE" is smallest at
    ``lr = 0.02`` so that the sampler has something to find; the selection is the first ``k`` experts."""

    def __init__(self, stop_after: int | None = None):
        self.calls: list[tuple[str, object]] = []
        self.stop_after = stop_after

    def __call__(self, data, gate, framework):
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            raise KeyboardInterrupt("killed")  # not an Exception: it ends the study, as a kill would
        self.calls.append((gate, data))
        pr = data.problem
        rows = pr.tasks if pr.gating == "static" else data.x_test.shape[0]
        selected = np.zeros((2, rows, pr.experts), dtype=bool)
        selected[:, :, : pr.k] = True
        mse = 0.01 + math.log(pr.lr / 0.02) ** 2 + (data.seed % 7) * 1e-3
        return TrainResult(eval_steps=np.array([2, 4]), history=selected, final_weights=selected[-1] / pr.k,
                           test_mse=mse, final_loss=mse, first_grads={}, learned_f_test=None, train_ms=1.0,
                           initial_selection=selected[0])


@pytest.fixture
def fake(monkeypatch):
    train = FakeTrain()
    monkeypatch.setattr(trial_mod, "train_on", train)
    return train


def _config(**changes) -> TuningConfig:
    values = dict(problem=TINY, gates=("softmax", "topk", "dselect_k", "hard_concrete"), trials=3,
                  tune_seeds=(0, 1), heldout_seeds=(1000, 1001, 1002), sampler="random", seed=0)
    values.update(changes)
    return TuningConfig(**values)


def _tune_calls(train: FakeTrain) -> list[tuple[str, object]]:
    return [(gate, data) for gate, data in train.calls if not data.support.any()]


# ----------------------------------------------------------------------------------------------------------------
def test_search_spaces_declared_per_gate_and_lr_only_for_unknown_gates():
    assert search_space("softmax").knobs == ("lr",)
    assert search_space("dselect_k").knobs == ("lr", "gamma", "entropy_reg", "dselect_z_init")
    assert search_space("hard_concrete").knobs == ("lr", "l0_reg")
    for new_gate in ("sigmoid_topk", "sparsemax", "entmax15", "remoe", "not_yet_written"):
        assert search_space(new_gate).knobs == ("lr",)
    # Top-k's noise and load balancing are tuned once RecoveryProblem has the knobs; until then they are listed.
    topk = search_space("topk")
    fields = space_mod.problem_knobs()
    assert set(topk.knobs) == {"lr"} | ({"topk_noisy", "load_balance"} & fields)
    assert set(topk.unavailable) == {"topk_noisy", "load_balance"} - fields
    with_knobs = search_space("topk", fields | {"topk_noisy", "load_balance"})
    assert with_knobs.knobs == ("lr", "topk_noisy", "load_balance") and with_knobs.unavailable == ()
    with pytest.raises(ValueError, match="lr: expected lr log-uniform"):
        search_space("softmax").check({"lr": 5.0})
    with pytest.raises(ValueError, match="low > 0"):
        Param("x", 0.0, 1.0, log=True)


def test_declare_gives_a_new_gate_its_own_knobs(monkeypatch):
    monkeypatch.setitem(space_mod.DECLARED, "remoe", ())
    space_mod.declare("remoe", Param("l0_reg", 1e-3, 1e-1, log=True))
    assert search_space("remoe").knobs == ("lr", "l0_reg")


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_every_trial_samples_inside_its_gates_space_and_keeps_the_other_knobs(fake, tmp_path, sampler):
    config = _config(sampler=sampler, trials=7)  # 7 > TPE's start-up trials: TPE proper suggests too
    run_tuning(config, tmp_path)
    base = TINY.to_dict()
    seen = {gate: [] for gate in config.gates}
    for gate, data in _tune_calls(fake):
        space = search_space(gate)
        values = data.problem.to_dict()
        space.check(values)  # raises if a value is outside its range
        assert {k: v for k, v in values.items() if k not in space.knobs} == \
            {k: v for k, v in base.items() if k not in space.knobs}, gate
        seen[gate].append(values["lr"])
    for gate, lrs in seen.items():
        assert len(set(lrs)) == config.trials, (gate, lrs)  # one configuration per trial, on every tuning seed


def test_trials_never_see_heldout_seeds_the_test_split_or_the_support(fake, tmp_path, monkeypatch):
    told = []
    real_value = study_mod.trial_value

    def spy_value(rows, max_nnz=None):
        told.append(list(rows))
        return real_value(rows, max_nnz)

    monkeypatch.setattr(study_mod, "trial_value", spy_value)
    config = _config()
    result = run_tuning(config, tmp_path)
    for gate, data in fake.calls:
        real = generate(data.problem, data.seed)
        if data.seed in config.tune_seeds:
            assert not data.support.any() and not data.coef.any(), "a tuning run saw the planted support"
            assert not np.array_equal(data.x_test, real.x_test) and not np.array_equal(data.y_test, real.y_test)
            assert np.array_equal(data.x_train, real.x_train)  # it trains exactly as a recovery run does
        else:
            assert data.seed in config.heldout_seeds
            assert np.array_equal(data.support, real.support) and np.array_equal(data.x_test, real.x_test)
            best = result["gates"][gate]["best"]["params"]
            assert {key: getattr(data.problem, key) for key in best} == best  # only the chosen configuration
    # The objective's inputs: tuning rows of tuning seeds, with a validation MSE and no support or test metric.
    assert told
    for rows in told:
        for row in rows:
            assert row["split"] == "tune" and row["seed"] in config.tune_seeds
            assert row["val_mse"] is not None
            assert all(row.get(m) is None for m in ("f1", "precision", "exact_support_rate", "test_mse"))


def test_heldout_seeds_must_be_disjoint_from_tuning_seeds():
    with pytest.raises(ValueError, match=r"heldout_seeds: expected seeds disjoint from tune_seeds; got \[1\]"):
        _config(tune_seeds=(0, 1), heldout_seeds=(1, 2))
    with pytest.raises(ValueError, match="sampler"):
        _config(sampler="grid")
    with pytest.raises(ValueError, match="trials"):
        _config(trials=0)
    assert _config(gates=("softmax",)).gates == ("softmax", "topk")  # the baseline is always tuned too


def test_a_killed_study_resumes_without_redoing_finished_runs(monkeypatch, tmp_path):
    config = _config(trials=2, sampler="tpe")
    uninterrupted = FakeTrain()
    monkeypatch.setattr(trial_mod, "train_on", uninterrupted)
    reference = run_tuning(_config(trials=4, sampler="tpe"), tmp_path / "reference")
    # Killed in the middle of a trial (after 5 tuning runs: gate 0 and 1 of trial 0, half of gate 2's) ...
    killed = FakeTrain(stop_after=5)
    monkeypatch.setattr(trial_mod, "train_on", killed)
    with pytest.raises(KeyboardInterrupt):
        run_tuning(config, tmp_path)
    assert len(read_rows(tmp_path / "tuning.jsonl").rows) == 5
    with pytest.raises(ValueError, match="already has rows"):
        run_tuning(config, tmp_path)
    # ... resumed: only the missing runs of the 2 trials, then the held-out reruns.
    resumed = FakeTrain()
    monkeypatch.setattr(trial_mod, "train_on", resumed)
    run_tuning(config, tmp_path, resume=True)
    tuning_runs = len(config.gates) * config.trials * len(config.tune_seeds)
    assert len(_tune_calls(resumed)) == tuning_runs - 5
    assert len(resumed.calls) - len(_tune_calls(resumed)) == len(config.gates) * len(config.heldout_seeds)
    # Resumed with more trials: only the 2 new trials per gate run; finished trials are told to Optuna from the
    # rows, and its suggestions are those of the uninterrupted 4-trial study.
    more = FakeTrain()
    monkeypatch.setattr(trial_mod, "train_on", more)
    result = run_tuning(_config(trials=4, sampler="tpe"), tmp_path, resume=True)
    assert len(_tune_calls(more)) == len(config.gates) * 2 * len(config.tune_seeds)
    assert {d.problem.lr for _, d in _tune_calls(more)}.isdisjoint({d.problem.lr for _, d in _tune_calls(resumed)})
    for gate in config.gates:
        assert result["gates"][gate]["trial_values"] == reference["gates"][gate]["trial_values"]
        assert result["gates"][gate]["best"] == reference["gates"][gate]["best"]
    # Nothing left to do: a third run trains nothing.
    idle = FakeTrain()
    monkeypatch.setattr(trial_mod, "train_on", idle)
    run_tuning(_config(trials=4, sampler="tpe"), tmp_path, resume=True)
    assert idle.calls == []


def test_every_gate_gets_the_same_budget(fake, tmp_path):
    config = _config(trials=3)
    result = run_tuning(config, tmp_path)
    rows = read_rows(tmp_path / "tuning.jsonl").rows
    for gate in config.gates:
        tune = [r for r in rows if r["gate"] == gate and r["split"] == "tune"]
        assert sorted({r["trial"] for r in tune}) == [0, 1, 2]
        assert len(tune) == config.trials * len(config.tune_seeds)
        assert result["gates"][gate]["trials"] == config.trials
        heldout = [r for r in rows if r["gate"] == gate and r["split"] == "heldout"]
        assert sorted(r["seed"] for r in heldout) == list(config.heldout_seeds)
        assert {r["trial"] for r in heldout} == {result["gates"][gate]["best"]["trial"]}
    # A study read back with a smaller budget uses the first trials of every gate, never more for one.
    fewer = study_mod.collect(_config(trials=2), rows)
    assert {g["trials"] for g in fewer["gates"].values()} == {2}
    # Rows missing for one gate break the budget: collect refuses to judge.
    short = [r for r in rows if not (r["gate"] == "dselect_k" and r["trial"] == 2)]
    with pytest.raises(ValueError, match=r"budget: expected 3 finished trials for every gate; got \{'dselect_k': 2\}"):
        study_mod.collect(config, short)
    with pytest.raises(ValueError, match="budget"):
        check_budgets({"topk": 3, "softmax": 4}, 3)


def test_max_nnz_fails_trials_whose_gate_keeps_too_many_experts(fake, tmp_path):
    rows = [{"split": "tune", "status": "ok", "val_mse": 0.02, "nnz": nnz} for nnz in (2.0, 5.0)]
    assert study_mod.trial_value(rows) == pytest.approx(0.02)
    assert study_mod.trial_value(rows, max_nnz=4.5) is None
    assert study_mod.trial_value(rows[:1], max_nnz=4.5) == pytest.approx(0.02)
    result = run_tuning(_config(trials=2, max_nnz=1.5), tmp_path)  # the fake selects k = 2 experts: all fail
    for gate, g in result["gates"].items():
        assert g["trials"] == 2 and g["failed_trials"] == 2 and g["best"] is None, gate
    assert "nnz > 1.5" in result["objective"]
    assert all(g["infeasible_trials"] == 2 for g in result["gates"].values())
    with pytest.raises(ValueError, match="max_nnz"):
        _config(max_nnz=0)


def test_the_sparsity_limit_reaches_optuna_as_a_constraint_not_a_failure(monkeypatch):
    import optuna

    assert study_mod.nnz_violation([{"nnz": 2.0}, {"nnz": 5.0}], 4.5) == pytest.approx(0.5)
    assert study_mod.nnz_violation([{"nnz": 2.0}], None) is None
    studies = []
    real = optuna.create_study

    def keep(*args, **kwargs):
        studies.append(real(*args, **kwargs))
        return studies[-1]

    monkeypatch.setattr(optuna, "create_study", keep)
    config = _config(max_nnz=4.5, tune_seeds=(0,))
    space = search_space("softmax")
    history = [study_mod.TrialRecord(i, {"lr": lr}, {0: {"split": "tune", "status": status, "val_mse": 0.1,
                                                         "nnz": nnz}})
               for i, (lr, nnz, status) in enumerate([(0.01, 6.0, "ok"), (0.02, 4.0, "ok"), (0.03, 4.0, "failed")])]
    study_mod.suggest(config, space, history, 3)
    told = studies[-1].get_trials(deepcopy=False)
    assert [t.state.name for t in told[:3]] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert told[0].constraints == {"max_nnz": 1.5} and told[1].constraints == {"max_nnz": -0.5}
    assert told[0].value == pytest.approx(0.1)


def test_rows_are_recovery_rows_with_the_study_columns(fake, tmp_path):
    run_tuning(_config(trials=1), tmp_path)
    read = read_rows(tmp_path / "tuning.jsonl")
    assert read.problems == []
    for row in read.rows:
        assert row["kind"] == "recovery" and row["status"] == "ok" and row["suite"] == "tuning"
        assert row["study"] == "tuning" and row["sampler"] == "random" and row["tuning_seed"] == 0
        assert row["split"] in ("tune", "heldout")
        if row["split"] == "heldout":
            assert 0.0 <= row["f1"] <= 1.0 and row["test_mse"] is not None
        else:
            assert row["val_mse"] is not None and row.get("f1") is None


# Reference values computed with statsmodels 0.15.0 (statsmodels.stats.multitest.multipletests(p, method="holm")).
HOLM_CASES = [
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
    ([0.2, 0.001, 0.5, 0.04, 0.03], [0.4, 0.005, 0.5, 0.12, 0.12]),
    ([0.00195, 0.00977, 0.557], [0.00585, 0.01954, 0.557]),
    ([0.5, 0.6], [1.0, 1.0]),
    ([0.7], [0.7]),
    ([0.02, 0.02, 0.9], [0.06, 0.06, 0.9]),
    ([0.0031, 0.047, 0.012, 0.21, 0.0009, 0.33, 0.047, 0.08], [0.0217, 0.235, 0.072, 0.42, 0.0072, 0.42, 0.235, 0.24]),
]


@pytest.mark.parametrize(("p", "expected"), HOLM_CASES)
def test_holm_matches_statsmodels(p, expected):
    assert holm(p) == pytest.approx(expected, abs=1e-12)


def test_holm_leaves_missing_tests_out():
    out = holm([0.01, math.nan, 0.04])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    with pytest.raises(ValueError, match="p_values"):
        holm([1.5])


def test_compare_gates_pairs_by_seed_and_corrects_across_gates():
    seeds = range(10)
    runs = {
        "topk": [{"seed": s, "f1": 0.9, "exact_support_rate": 0.5, "test_mse": 0.02, "nnz": 4.0} for s in seeds],
        "softmax": [{"seed": s, "f1": 1.0, "exact_support_rate": 1.0, "test_mse": 0.01 + s * 1e-4, "nnz": 4.0}
                    for s in seeds],
        "dselect_k": [{"seed": s, "f1": 0.9 + (s - 4.5) * 1e-3, "exact_support_rate": 0.5, "test_mse": 0.02,
                       "nnz": 4.5} for s in seeds],
    }
    out = compare_gates(runs, "topk")
    assert out["topk"]["tests"] == {}
    f1 = out["softmax"]["tests"]["f1"]
    assert f1["pairs"] == 10 and f1["median_diff"] == pytest.approx(0.1) and f1["p_value"] == pytest.approx(0.001953125)
    assert f1["p_holm"] == pytest.approx(holm([f1["p_value"], out["dselect_k"]["tests"]["f1"]["p_value"]])[0])
    assert out["dselect_k"]["tests"]["exact_support_rate"]["p_value"] == 1.0  # all differences zero
    assert out["softmax"]["summary"]["f1"] == {"mean": 1.0, "se": 0.0, "count": 10}


# ----------------------------------------------------------------------------------------------------------------
def test_validation_split_is_fresh_data_of_the_training_distribution():
    problem = RecoveryProblem(experts=8, k=2, tasks=4, clusters=2, samples=256, test_samples=2048, noise=0.1)
    data = generate(problem, 3)
    val = validation_split(data)
    assert val["x"].shape == data.x_test.shape and not np.allclose(val["x"], data.x_test)
    residual = val["y"] - val["f"] @ data.coef.T
    assert residual.std() == pytest.approx(problem.noise, rel=0.05)
    assert np.array_equal(validation_split(generate(problem, 3))["y"], val["y"])  # seeded
    blind = trial_data(data)
    assert not blind.support.any() and np.array_equal(blind.x_test, val["x"])
    assert data.support.any()  # the original is untouched


def test_per_example_cluster_means_are_the_data_streams_first_draw():
    problem = RecoveryProblem(gating="per_example", tasks=1, clusters=3, experts=6, k=2, samples=128, test_samples=64)
    data = generate(problem, 5)
    rng = np.random.default_rng([5, 0])
    rng.normal(size=(problem.clusters, problem.input_dim))  # the means, redrawn by cluster_means
    rng.integers(0, problem.clusters, size=problem.samples)
    rng.integers(0, problem.clusters, size=problem.test_samples)
    noise = rng.normal(size=(problem.samples, problem.input_dim))
    assert np.allclose(cluster_means(data)[data.cluster_train] + noise, data.x_train)
    val = validation_split(data)
    residual = val["y"][:, 0] - np.einsum("be,be->b", val["f"], data.coef[val["cluster"]])
    assert residual.std() == pytest.approx(problem.noise, rel=0.2)


# ----------------------------------------------------------------------------------------------------------------
def test_tuning_suite_files_load():
    paths = sorted((ROOT / "suites").glob("tuning_*.toml"))
    assert paths
    for path in paths:
        config = load_tuning_suite(path)
        assert set(config.tune_seeds).isdisjoint(config.heldout_seeds)
    smoke = load_tuning_suite("tuning_smoke")
    assert smoke.heldout_seeds[0] == 1000


def test_tuning_suite_errors_name_the_key():
    with pytest.raises(ValueError, match="unknown keys grid"):
        tuning_config({"kind": "tuning", "grid": {}})
    with pytest.raises(ValueError, match="kind: expected 'tuning'"):
        tuning_config({"kind": "recovery"})
    with pytest.raises(ValueError, match="problem: unknown keys colour"):
        tuning_config({"kind": "tuning", "problem": {"colour": 1}})
    with pytest.raises(ValueError, match="tune_seeds"):
        tuning_config({"kind": "tuning", "tune_seeds": 0})


def _app() -> typer.Typer:
    from gatebench.cli import tune

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """gatebench"""

    tune.register(app)
    return app


def test_cli_tunes_prints_json_and_resumes(fake, tmp_path):
    args = ["tune", "--gate", "softmax", "--gate", "topk", "--experts", "6", "--k", "2", "--tasks", "4",
            "--clusters", "2", "--steps", "4", "--tune-seeds", "2", "--seeds", "3", "--sampler", "random",
            "--out", str(tmp_path), "--json"]
    result = CliRunner().invoke(_app(), [*args, "--trials", "2"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["trials"] == 2 and doc["heldout_seeds"] == [1000, 1001, 1002]
    assert set(doc["gates"]) == {"softmax", "topk"}
    assert doc["gates"]["softmax"]["tests"]["f1"]["pairs"] == 3
    first = len(fake.calls)
    again = CliRunner().invoke(_app(), [*args, "--trials", "3"])
    assert again.exit_code == 2 and "already has rows" in again.output
    resumed = CliRunner().invoke(_app(), [*args, "--trials", "3", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert len(_tune_calls(fake)) == 2 * 3 * 2 and len(fake.calls) - first >= 2 * 2
    table = CliRunner().invoke(_app(), [a for a in args if a != "--json"] + ["--trials", "3", "--resume"])
    assert table.exit_code == 0, table.output
    assert "best parameters" in table.output and "held-out seeds 1000..1002" in table.output


def test_cli_rejects_overlapping_or_bad_options(tmp_path):
    result = CliRunner().invoke(_app(), ["tune", "--gate", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "gate: expected one of" in result.output


@pytest.mark.torch
def test_a_tiny_real_study_trains_in_torch(gt, tmp_path):
    config = _config(gates=("topk", "hard_concrete"), trials=2, tune_seeds=(0,), heldout_seeds=(1000, 1001))
    result = run_tuning(config, tmp_path)
    for gate in config.gates:
        g = result["gates"][gate]
        assert g["trials"] == 2 and g["failed_trials"] == 0 and g["best"]["val_mse"] > 0
        assert g["summary"]["f1"]["count"] == 2
