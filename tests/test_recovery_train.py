"""The recovery training loops: batched task gates match the gate modules, PyTorch and TensorFlow start from the
same numbers and take the same first step, and short runs learn what they should."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gates import reference as ref
from harness.recovery.data import generate
from harness.recovery.problem import RecoveryProblem
from harness.recovery.run import run_one, score
from harness.recovery.steps import initial_params, step_inputs

GATES = ("softmax", "topk", "dselect_k", "hard_concrete")
SMALL = {"experts": 8, "k": 2, "tasks": 6, "clusters": 3, "samples": 256, "test_samples": 128}


def _loop(framework: str):
    if framework == "torch":
        from harness.recovery import train_torch as loop
    else:
        from harness.recovery import train_tf as loop
    return loop


@pytest.mark.parametrize("gating", ["static", "per_example"])
@pytest.mark.parametrize("gate", GATES)
def test_task_gates_match_the_gate_modules(G, framework, gate, gating):
    """The loops' ``gate_weights`` equal ``make_gate`` modules: one per task (static) or the routing gate."""
    knobs = {**SMALL, "experts": 6} if gating == "static" else {**SMALL, "experts": 6, "tasks": 1}  # 6: not 2^m
    pr = RecoveryProblem(gating=gating, dtype="float64", entropy_reg=0.01, **knobs)
    data = generate(pr, 0)
    params = data.init_gate_params(gate)
    loop = _loop(framework)
    tensor = (lambda a: __import__("torch").as_tensor(a)) if framework == "torch" else (
        lambda a: __import__("tensorflow").constant(a))
    cfg = pr.gate_config(gate)
    x = tensor(data.x_train[:5]) if gating == "per_example" else None
    u = data.gate_noise(gate)
    noise = None if u is None else tensor(u[0][: 5 if gating == "per_example" else pr.tasks])
    for training in (False, True):
        q, reg = loop.gate_weights(cfg, {k: tensor(v) for k, v in params.items()}, x, training, noise)
        rows = range(pr.tasks) if gating == "static" else [None]
        expect_q, expect_reg = [], 0.0
        for t in rows:
            gate_mod = G.make_gate(gate, pr.experts, pr.k, cfg.input_dim, dtype="float64",
                                   **pr.gate_hparams(gate))
            gate_mod.set_numpy_params({k: v if t is None else v[t] for k, v in params.items()})
            kw = {} if noise is None or not training else {"noise": noise if t is None else noise[t]}
            if framework == "torch":
                gate_mod.train(training)
                out = gate_mod(x, **kw) if x is not None else gate_mod(**kw)
            else:
                out = gate_mod(x, training=training, **kw)
            expect_q.append(np.asarray(out.detach() if framework == "torch" else out))
            reg_t = gate_mod.regularization_loss
            expect_reg += float(reg_t.detach() if framework == "torch" else reg_t)
        expect = np.stack(expect_q) if gating == "static" else expect_q[0]
        got = np.asarray(q.detach() if framework == "torch" else q)
        np.testing.assert_allclose(got, expect, rtol=1e-12, atol=1e-12, err_msg=f"{gate} {gating} weights")
        assert float(reg) == pytest.approx(expect_reg, rel=1e-10, abs=1e-12), f"{gate} {gating} regulariser"


@pytest.mark.parametrize("gating", ["static", "per_example"])
def test_task_gates_have_noisy_topk_and_load_balancing(G, framework, gating, rng):
    """The loops' gates are the modules' recipe: noisy Top-k and load balancing too (one CV^2 per task's gate)."""
    from gates import spec

    tasks, n, p = 4, 6, 5
    cfg = spec.make_config("topk", n, 2, None if gating == "static" else p, noisy=True, load_balance=0.3)
    per_gate = [{key: rng.normal(size=shape) for key, shape in cfg.param_shapes().items()} for _ in range(tasks)]
    params = {key: np.stack([g[key] for g in per_gate]) for key in per_gate[0]} if gating == "static" else per_gate[0]
    x = rng.normal(size=(7, p)) if gating == "per_example" else None
    eps = rng.standard_normal((tasks, n) if gating == "static" else (7, n))
    loop = _loop(framework)
    tensor = (lambda a: __import__("torch").as_tensor(a)) if framework == "torch" else (
        lambda a: __import__("tensorflow").constant(a))
    for training in (False, True):
        q, reg = loop.gate_weights(cfg, {k: tensor(v) for k, v in params.items()}, None if x is None else tensor(x),
                                   training, tensor(eps))
        rows = range(tasks) if gating == "static" else [None]
        outs = [ref.gate_forward(cfg, per_gate[t or 0], x, training=training, noise=eps if t is None else eps[t])
                for t in rows]
        want_q = np.stack([o.weights for o in outs]) if gating == "static" else outs[0].weights
        got = np.asarray(q.detach() if framework == "torch" else q)
        np.testing.assert_allclose(got, want_q, rtol=1e-12, atol=1e-12, err_msg=f"{gating} weights")
        want_reg = sum(o.regularization for o in outs)
        assert float(reg) == pytest.approx(want_reg, rel=1e-10, abs=1e-12), f"{gating} regulariser"
        assert (want_reg > 0) == training


@pytest.mark.parity
@pytest.mark.parametrize(
    "gating, experts_mode, gates",
    [("static", "known", GATES), ("per_example", "known", GATES), ("static", "learned", ("dselect_k", "topk")),
     ("per_example", "learned", ("hard_concrete",))],
)
def test_torch_and_tf_take_the_same_first_step(gt, gf, gating, experts_mode, gates):
    """Same data, same initial parameters, same first-step gradients (1e-5), in float32."""
    from harness.recovery import train_tf, train_torch

    knobs = dict(SMALL, tasks=1) if gating == "per_example" else dict(SMALL)
    pr = RecoveryProblem(gating=gating, experts_mode=experts_mode, steps=2, eval_every=1, **knobs)
    data = generate(pr, 5)
    for gate in gates:
        a, b = train_torch.train(data, gate), train_tf.train(data, gate)
        assert a.first_grads.keys() == b.first_grads.keys() == initial_params(data, gate).keys()
        for key in a.first_grads:
            ga, gb = a.first_grads[key], b.first_grads[key]
            scale = max(1.0, float(np.abs(ga).max()))
            np.testing.assert_allclose(gb, ga, rtol=0, atol=1e-5 * scale, err_msg=f"{gate} {key}")
            assert np.abs(ga).max() > 0 or gate == "topk", f"{gate} {key}: gradient is all zero"
    # Both loops fed the same step inputs: the data is framework-free.
    np.testing.assert_array_equal(step_inputs(data, 1, "hard_concrete")["u"], data.gate_noise("hard_concrete")[1])


@pytest.mark.parametrize("fw", ["torch", "tf"])
def test_softmax_recovers_an_easy_static_problem(fw, gt, gf):
    pr = RecoveryProblem(steps=150, noise=0.05, **SMALL)
    out = run_one(pr, "softmax", fw, 0)
    assert out["selection"] == "topk_of_dense"
    assert out["f1"] == 1.0 and out["exact_support_rate"] == 1.0
    assert out["test_mse"] < 0.05 and out["steps_to_support"] <= 150


def test_hard_concrete_run_is_sparse_and_scored_against_planted(gt):
    pr = RecoveryProblem(steps=200, **SMALL)
    data = generate(pr, 1)
    from harness.recovery import train_torch

    result = train_torch.train(data, "hard_concrete")
    out = score(data, "hard_concrete", result)
    assert out["selection"] == "nonzero"
    assert out["nnz"] < pr.experts  # the L0 penalty switched experts off
    assert result.history.shape == (200 // pr.eval_every, pr.tasks, pr.experts)
    assert 0 <= out["f1"] <= 1 and out["f1"] > 0.5


def test_learned_experts_are_matched_before_scoring(gt):
    pr = RecoveryProblem(experts_mode="learned", steps=300, noise=0.01, lr=0.05, **SMALL)
    out = run_one(pr, "softmax", "torch", 0)
    assert "matched_corr" in out and out["matched_corr"] > 0.5
    assert 0 <= out["f1"] <= 1


def _recover_app():
    import typer

    from gatebench.cli import recover as _cli_recover

    app = typer.Typer()
    app.callback()(lambda: None)  # a group, as in gatebench.cli (which also registers the other commands)
    _cli_recover.register(app)
    return app


def test_cli_recover_suite_runs_through_the_generic_runner(tmp_path, gt):
    """``gatebench recover --suite`` writes the rows ``harness.runner.run_suite`` writes, resumes, and refuses to
    append to an existing file without --resume (--fresh moves it aside)."""
    from typer.testing import CliRunner

    from harness.recovery.suite import expand, run_case
    from harness.results import case_id, read_rows
    from harness.runner import run_suite
    from harness.suite import load_suite

    suite = tmp_path / "s.toml"
    suite.write_text(
        'name = "tiny"\nkind = "recovery"\ngates = ["topk", "softmax"]\nframeworks = ["torch"]\nseeds = 2\n'
        '[[problems]]\nname = "p"\nexperts = 4\nk = 2\ntasks = 2\nclusters = 1\nsteps = 20\nsamples = 64\n'
        'test_samples = 32\nbatch = 16\neval_every = 5\n'
    )
    out = tmp_path / "r.jsonl"
    app, runner = _recover_app(), CliRunner()
    res = runner.invoke(app, ["recover", "--suite", str(suite), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "4 ok, 0 failed, 0 already done" in res.output
    rows = read_rows(out).rows
    assert {r["kind"] for r in rows} == {"recovery"} and {r["suite"] for r in rows} == {"tiny"}
    assert len({r["case_id"] for r in rows}) == 4 and all(r["status"] == "ok" for r in rows)
    assert all(0 <= r["f1"] <= 1 and r["provenance"]["torch"] for r in rows)
    # Support stability over training: one value per evaluation, at the recorded steps.
    assert all(r["eval_steps"] == [5, 10, 15, 20] and len(r["support_changes_trace"]) == 4 for r in rows)
    assert all(all(0 <= v <= 1 for v in r["support_changes_trace"]) for r in rows)
    # The same columns and values as the generic runner's rows and as run_case (the runs are deterministic).
    direct = run_suite(suite, tmp_path / "direct.jsonl").rows
    assert [r["case_id"] for r in direct] == [r["case_id"] for r in rows]
    assert [sorted(r) for r in direct] == [sorted(r) for r in rows]
    assert [r["f1"] for r in direct] == [r["f1"] for r in rows]
    params = expand(load_suite(suite).raw)[0]
    assert case_id(params) == rows[0]["case_id"]
    first = run_case(params)
    assert first["f1"] == rows[0]["f1"] and first["support_changes_trace"] == rows[0]["support_changes_trace"]
    # Resume: nothing left to run; without --resume an existing file is an error (exit 2, the reason printed).
    again = runner.invoke(app, ["recover", "--suite", str(suite), "--out", str(out), "--resume"])
    assert again.exit_code == 0 and "0 ok, 0 failed, 4 already done" in again.output
    assert len(read_rows(out).rows) == 4
    refused = runner.invoke(app, ["recover", "--suite", str(suite), "--out", str(out)])
    assert refused.exit_code == 2 and "already has rows; pass resume" in " ".join(refused.output.split())
    assert len(read_rows(out).rows) == 4
    timing = tmp_path / "t.toml"
    timing.write_text('name = "t"\n[[grid]]\ngate = "softmax"\nframework = "torch"\nmode = "fwd"\n'
                      'shapes = [{batch = 4, input_dim = 4, experts = 4, k = 2}]\n')
    wrong = runner.invoke(app, ["recover", "--suite", str(timing), "--out", str(tmp_path / "t.jsonl")])
    assert wrong.exit_code == 2 and "expected a recovery suite" in " ".join(wrong.output.split())
    fresh = runner.invoke(app, ["recover", "--suite", str(suite), "--out", str(out), "--fresh"])
    assert fresh.exit_code == 0 and "4 ok, 0 failed, 0 already done" in fresh.output
    assert len(read_rows(out).rows) == 4 and len(list(tmp_path.glob("r.jsonl.*.bak"))) == 1


def test_generic_runner_limits_tensorflow_to_one_thread(tmp_path, gf):
    """A recovery case run by ``harness.runner`` (as ``gatebench run`` does) sets TF to one intra-op thread, in a
    fresh process (TensorFlow takes thread settings only before it initialises)."""
    import subprocess
    import sys

    code = (
        "import tensorflow as tf\n"
        "from harness.runner import Task, execute_task\n"
        "params = {'gate': 'topk', 'framework': 'tf', 'seed': 0, 'problem': 'p', 'experts': 4, 'k': 2, 'tasks': 2,\n"
        "          'clusters': 1, 'steps': 4, 'samples': 32, 'test_samples': 16, 'batch': 8, 'eval_every': 2}\n"
        "row = execute_task(Task('recovery', 's', {}, params))\n"
        "assert row['status'] == 'ok', row['error']\n"
        "print(tf.config.threading.get_intra_op_parallelism_threads(),\n"
        "      tf.config.threading.get_inter_op_parallelism_threads(), row['provenance']['tensorflow'])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    intra, inter, version = res.stdout.split()[-3:]
    assert (intra, inter) == ("1", "1") and version


def test_cli_recover_json_and_errors(gt):
    from typer.testing import CliRunner

    app, runner = _recover_app(), CliRunner()
    res = runner.invoke(app, ["recover", "--gate", "topk", "--framework", "torch", "--experts", "4", "--k", "2",
                              "--tasks", "2", "--clusters", "1", "--seeds", "2", "--steps", "20", "--json",
                              "--baseline", "softmax"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["seeds"] == [0, 1] and len(doc["runs"]) == 2 and 0 <= doc["f1"] <= 1
    assert doc["f1"] == pytest.approx(np.mean([r["f1"] for r in doc["runs"]]))
    assert "wilcoxon_f1" in doc["baseline"]
    bad = runner.invoke(app, ["recover", "--experts", "4", "--k", "5"])
    assert bad.exit_code == 2 and "k: expected an integer in [1, experts=4]; got 5" in bad.output
    bad = runner.invoke(app, ["recover", "--tasks", "4", "--clusters", "8"])
    assert bad.exit_code == 2 and "clusters: expected at most tasks=4" in bad.output
    bad = runner.invoke(app, ["recover", "--noise", "-1"])
    assert bad.exit_code == 2 and "noise: expected a finite number >= 0" in bad.output
    bad = runner.invoke(app, ["recover", "--samples", "0"])
    assert bad.exit_code == 2 and "samples: expected an integer >= 1" in bad.output
