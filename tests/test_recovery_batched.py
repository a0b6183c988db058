"""Batched recovery training (``harness.recovery.batch``): many runs at once give the one-run loop's results, in
both frameworks, static and per-example; the entry points use it; the Top-k knobs; the committed default results
still reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.recovery import batch as batch_mod
from harness.recovery import run as run_mod
from harness.recovery.data import generate
from harness.recovery.problem import RecoveryProblem
from harness.recovery.run import score, train, train_many

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"experts": 8, "k": 2, "tasks": 6, "clusters": 3, "samples": 128, "test_samples": 64, "batch": 32,
         "steps": 25, "eval_every": 5}
PER_EXAMPLE = dict(SMALL, gating="per_example", tasks=1)
GATES = ("softmax", "topk", "dselect_k", "hard_concrete")
METRICS = ("f1", "precision", "recall", "exact_support_rate", "nnz", "support_changes", "steps_to_support")


def _datas(problem: RecoveryProblem, seeds=(0, 1, 2)):
    lrs = (0.05, 0.02, 0.1)  # per-run learning rates: a batch of a gate's trials
    return [generate(problem.replace(lr=lrs[i % 3]), seed) for i, seed in enumerate(seeds)]


def _assert_same(serial, batched, datas, gate):
    for data, a, b in zip(datas, serial, batched, strict=True):
        np.testing.assert_allclose(b.final_weights, a.final_weights, rtol=1e-5, atol=1e-6, err_msg=gate)
        for key in a.first_grads:
            np.testing.assert_allclose(b.first_grads[key], a.first_grads[key], rtol=1e-5, atol=1e-7, err_msg=key)
        np.testing.assert_allclose(b.test_mse, a.test_mse, rtol=1e-4)
        np.testing.assert_allclose(b.final_loss, a.final_loss, rtol=1e-4)
        np.testing.assert_array_equal(b.eval_steps, a.eval_steps)
        sa, sb = score(data, gate, a), score(data, gate, b)
        for name in METRICS:
            np.testing.assert_allclose(sb[name], sa[name], rtol=1e-9, err_msg=f"{gate} {name}")
        assert sb["support_changes_trace"] == pytest.approx(sa["support_changes_trace"])


# Static float32 runs are equal to the last bit here; a per-example gate's batched matmul (R runs' kernels at once)
# rounds differently from one run's in TensorFlow, and float32 differences grow along a trajectory (as PyTorch's and
# TensorFlow's do, docs/recovery.md): those compare in float64.
@pytest.mark.parametrize("knobs", [SMALL, dict(PER_EXAMPLE, dtype="float64"),
                                   dict(SMALL, experts_mode="learned", dtype="float64")],
                         ids=["static", "per_example", "learned"])
@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_batched_runs_equal_one_at_a_time(knobs, framework):
    pytest.importorskip("torch" if framework == "torch" else "tensorflow")
    datas = _datas(RecoveryProblem(**knobs))
    for gate in GATES:
        serial = [train(data, gate, framework) for data in datas]
        batched = train_many(datas, gate, framework)
        _assert_same(serial, batched, datas, gate)


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_batched_new_gates_and_topk_knobs_equal_one_at_a_time(framework):
    pytest.importorskip("torch" if framework == "torch" else "tensorflow")
    datas = _datas(RecoveryProblem(topk_noisy=True, load_balance=0.05, **SMALL))
    for gate in ("topk", "sigmoid_topk", "sparsemax", "entmax15", "remoe"):
        serial = [train(data, gate, framework) for data in datas]
        batched = train_many(datas, gate, framework)
        _assert_same(serial, batched, datas, gate)
        for a, b in zip(serial, batched, strict=True):
            for key in a.final_state:
                np.testing.assert_allclose(b.final_state[key], a.final_state[key], rtol=1e-5, atol=1e-7)


def test_what_batches_and_what_does_not(monkeypatch):
    static, per_example = RecoveryProblem(**SMALL), RecoveryProblem(**PER_EXAMPLE)
    assert batch_mod.batchable(static, "sigmoid_topk") and batch_mod.batchable(per_example, "dselect_k")
    assert not batch_mod.batchable(per_example, "sigmoid_topk")  # its bias reads the whole batch's load
    assert not batch_mod.batchable(per_example.replace(load_balance=0.1), "topk")
    assert batch_mod.batchable(per_example.replace(load_balance=0.1), "softmax")
    with pytest.raises(ValueError, match="datas: expected problems that differ only in lr"):
        batch_mod.RunBatch([generate(static, 0), generate(static.replace(l0_reg=0.1), 1)], "hard_concrete")
    with pytest.raises(ValueError, match="gate: 'remoe' with per_example gating"):
        batch_mod.RunBatch([generate(per_example, 0), generate(per_example, 1)], "remoe")
    # train_many falls back to one run at a time for what does not batch.
    calls = []
    monkeypatch.setattr(run_mod, "train", lambda data, gate, fw: calls.append(data.seed) or data.seed)
    assert train_many([generate(per_example, 0), generate(per_example, 1)], "remoe", "torch") == [0, 1]
    assert train_many([generate(static, 0), generate(static.replace(steps=5), 1)], "topk", "torch") == [0, 1]
    assert calls == [0, 1, 0, 1]


def test_run_seeds_trains_the_seeds_of_a_gate_together(monkeypatch):
    pytest.importorskip("torch")
    from harness.recovery import train_batched_torch

    sizes = []
    real = train_batched_torch.train_batched
    monkeypatch.setattr(train_batched_torch, "train_batched", lambda datas, gate: sizes.append(len(datas)) or
                        real(datas, gate))
    ticks = []
    out = run_mod.run_seeds(RecoveryProblem(**SMALL), "dselect_k", "torch", [0, 1, 2], baseline="topk",
                            progress=lambda: ticks.append(1))
    assert sizes == [3, 3] and len(ticks) == 6
    assert [r["seed"] for r in out["runs"]] == [0, 1, 2] and out["baseline"]["wilcoxon_f1"]["pairs"] == 3


def test_topk_knobs():
    pr = RecoveryProblem(**SMALL)
    assert pr.topk_noisy is False and pr.load_balance == 0.0
    assert pr.gate_config("topk") == pr.replace(topk_noisy=False).gate_config("topk")
    assert generate(pr, 0).gate_noise("topk") is None
    noisy = pr.replace(topk_noisy=True, load_balance=0.02)
    assert noisy.gate_config("topk").hparams["noisy"] is True
    assert noisy.gate_config("topk").hparams["load_balance"] == 0.02
    eps = generate(noisy, 0).gate_noise("topk")
    assert eps.shape == (pr.steps, pr.tasks, pr.experts)
    np.testing.assert_array_equal(eps, generate(noisy, 0).gate_noise("topk"))  # seeded
    assert not np.array_equal(eps, generate(noisy, 1).gate_noise("topk"))
    assert "noise_logits" in generate(noisy, 0).init_gate_params("topk")
    with pytest.raises(ValueError, match="topk_noisy: expected True or False"):
        pr.replace(topk_noisy=1)
    with pytest.raises(ValueError, match="load_balance"):
        pr.replace(load_balance=-0.1)
    from harness.tuning.space import search_space

    space = search_space("topk")
    assert space.knobs == ("lr", "topk_noisy", "load_balance") and space.unavailable == ()


def _committed(gate: str, framework: str, seed: int) -> dict:
    for line in (ROOT / "docs/results/recovery.jsonl").read_text().splitlines():
        row = json.loads(line)
        if (row["gate"], row["framework"], row["seed"]) == (gate, framework, seed) and row["status"] == "ok":
            return row
    raise AssertionError(f"no committed row for {gate} {framework} {seed}")


@pytest.mark.parametrize("batched", [False, True], ids=["one_run", "batched"])
def test_the_default_problem_reproduces_the_committed_rows(batched):
    """The new knobs at their defaults change nothing: topk seed 0 (and, batched, seed 1 beside it) on the default
    problem give the committed metrics of docs/results/recovery.jsonl."""
    pytest.importorskip("torch")
    problem = RecoveryProblem()
    seeds = [0, 1] if batched else [0]
    datas = [generate(problem, s) for s in seeds]
    results = train_many(datas, "topk", "torch") if batched else [train(datas[0], "topk", "torch")]
    for data, result in zip(datas, results, strict=True):
        got, want = score(data, "topk", result), _committed("topk", "torch", data.seed)
        for name in ("f1", "precision", "recall", "exact_support_rate", "nnz", "support_changes"):
            assert got[name] == want[name], name
        assert got["test_mse"] == pytest.approx(want["test_mse"], rel=1e-5)
        assert got["support_changes_trace"] == pytest.approx(want["support_changes_trace"])
