"""Recovery problem definitions and planted data: validation, determinism, structure; no framework needed."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from harness.recovery.data import expert_outputs, generate
from harness.recovery.problem import RecoveryProblem
from harness.recovery.suite import expand


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"experts": 4, "k": 5}, r"k: expected an integer in \[1, experts=4\]; got 5"),
        ({"k": 0}, r"k: expected an integer in \[1, experts=16\]; got 0"),
        ({"tasks": 4, "clusters": 8}, r"clusters: expected at most tasks=4 .*got 8"),
        ({"samples": 0}, r"samples: expected an integer >= 1; got 0"),
        ({"noise": -0.1}, r"noise: expected a finite number >= 0; got -0.1"),
        ({"experts": 1, "k": 1}, r"experts: expected an integer >= 2; got 1"),
        ({"gating": "dynamic"}, r"gating: expected one of static, per_example; got 'dynamic'"),
        ({"gating": "per_example", "tasks": 3, "clusters": 2}, r"tasks: expected 1 for per_example"),
        ({"expert_correlation": 1.0}, r"expert_correlation: expected a number in \[0, 1\); got 1.0"),
        ({"lr": 0.0}, r"lr: expected a positive finite number; got 0.0"),
        ({"batch": 2048}, r"batch: expected at most samples=1024; got 2048"),
        ({"steps": 2.5}, r"steps: expected an integer >= 1; got 2.5"),
        ({"experts_mode": "frozen"}, r"experts_mode: expected one of known, learned; got 'frozen'"),
    ],
)
def test_bad_problem_definitions_are_rejected(changes, match):
    with pytest.raises(ValueError, match=match):
        RecoveryProblem(**changes)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="problem: unknown keys expert"):
        RecoveryProblem.from_dict({"expert": 16})


def test_generate_rejects_a_negative_seed():
    with pytest.raises(ValueError, match="seed: expected an integer >= 0; got -1"):
        generate(RecoveryProblem(), -1)


def test_static_data_structure():
    pr = RecoveryProblem(experts=16, k=4, tasks=32, clusters=8, samples=256, test_samples=128, steps=20)
    d = generate(pr, 3)
    assert d.support.shape == (32, 16) and (d.support.sum(axis=1) == 4).all()
    # Tasks in the same cluster share their support; coefficients are positive on it and sum to 1.
    for t in range(32):
        np.testing.assert_array_equal(d.support[t], d.support[t % 8])
    assert (d.coef[d.support] > 0).all() and (d.coef[~d.support] == 0).all()
    np.testing.assert_allclose(d.coef.sum(axis=1), 1.0)
    # Experts have unit output variance on the training inputs; targets follow the planted combination.
    np.testing.assert_allclose(d.f_train.std(axis=0), 1.0, rtol=1e-10)
    np.testing.assert_allclose(d.f_train, expert_outputs(d.x_train, d.expert_params))
    residual = d.y_train - d.f_train @ d.coef.T
    assert abs(residual.std() - pr.noise) < 0.01
    assert d.batches.shape == (20, pr.batch) and d.batches.max() < 256
    assert all(len(set(b)) == pr.batch for b in d.batches)  # no repeats within a batch


def test_per_example_data_structure():
    pr = RecoveryProblem(gating="per_example", tasks=1, clusters=4, samples=400, noise=0.0, expert_kind="mlp")
    d = generate(pr, 0)
    assert d.support.shape == (4, 16) and d.y_train.shape == (400, 1)
    expected = np.einsum("be,be->b", d.f_train, d.coef[d.cluster_train])
    np.testing.assert_allclose(d.y_train[:, 0], expected)
    assert d.test_support.shape == (pr.test_samples, 16)
    assert set(np.unique(d.cluster_train)) == {0, 1, 2, 3}


def test_seeds_are_reproducible_and_distinct():
    pr = RecoveryProblem(samples=128, steps=5)
    a, b, c = generate(pr, 1), generate(pr, 1), generate(pr, 2)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    np.testing.assert_array_equal(a.batches, b.batches)
    assert not np.array_equal(a.y_train, c.y_train)
    for gate in ("softmax", "dselect_k", "hard_concrete"):
        pa, pb = a.init_gate_params(gate), b.init_gate_params(gate)
        assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)
    # Each task has its own gate: parameters differ between tasks.
    logits = a.init_gate_params("softmax")["logits"]
    assert logits.shape == (pr.tasks, pr.experts) and not np.allclose(logits[0], logits[1])
    u = a.gate_noise("hard_concrete")
    assert u.shape == (5, pr.tasks, pr.experts) and 0 < u.min() and u.max() < 1
    assert a.gate_noise("topk") is None


def test_expert_correlation_knob():
    pr = RecoveryProblem(samples=2000, expert_correlation=0.8, input_dim=64)
    corr = np.corrcoef(generate(pr, 0).f_train.T)
    off = corr[~np.eye(pr.experts, dtype=bool)]
    assert 0.6 < off.mean() < 0.95
    off0 = np.corrcoef(generate(pr.replace(expert_correlation=0.0), 0).f_train.T)[~np.eye(16, dtype=bool)]
    assert abs(off0.mean()) < 0.1


def test_suite_expand_covers_the_grid_with_full_definitions():
    suite = {"name": "t", "kind": "recovery", "gates": ["topk", "dselect_k"], "frameworks": ["torch", "tf"],
             "seeds": 3, "problems": [{"name": "small", "experts": 8, "k": 2, "tasks": 4, "clusters": 2}]}
    cases = expand(suite)
    assert len(cases) == 2 * 2 * 3
    assert {(c["gate"], c["framework"], c["seed"]) for c in cases} == {
        (g, f, s) for g in ("topk", "dselect_k") for f in ("torch", "tf") for s in range(3)
    }
    assert all(c["experts"] == 8 and c["lr"] == RecoveryProblem().lr for c in cases)
    with pytest.raises(ValueError, match="clusters: expected at most tasks=4"):
        expand({**suite, "problems": [{"tasks": 4, "clusters": 5}]})
    with pytest.raises(ValueError, match="gates: expected a non-empty list"):
        expand({**suite, "gates": ["moe"]})
    with pytest.raises(ValueError, match="seeds: expected"):
        expand({**suite, "seeds": 0})


def test_the_default_suite_file_has_at_least_ten_seeds_and_every_gate_and_framework():
    from pathlib import Path

    from harness.suite import load_suite

    suite = load_suite(Path(__file__).resolve().parents[1] / "suites" / "recovery.toml")
    cases = expand(suite.raw)
    assert suite.kind == "recovery"
    assert len({c["seed"] for c in cases}) >= 10
    assert {c["gate"] for c in cases} == {"softmax", "topk", "dselect_k", "hard_concrete"}
    assert {c["framework"] for c in cases} == {"torch", "tf"}


def test_recovery_modules_do_not_import_frameworks():
    code = (
        "import sys, harness.recovery, harness.recovery.run, harness.recovery.suite, harness.recovery.report, "
        "gatebench.cli.recover\n"
        "bad = [m for m in ('torch', 'tensorflow') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
