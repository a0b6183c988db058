"""The recovery loops with the newer routers: their state (sigmoid_topk's bias, ReMoE's L1 coefficient) is stepped
once per training step, from that step's training weights, the same in PyTorch and TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest

from gates import reference as ref
from harness.recovery import metrics
from harness.recovery.data import generate
from harness.recovery.problem import RecoveryProblem
from harness.recovery.steps import initial_params, initial_state, step_inputs

SMALL = {"experts": 8, "k": 2, "tasks": 4, "clusters": 3, "samples": 128, "test_samples": 64}
NEW = ("sigmoid_topk", "sparsemax", "entmax15", "remoe")


@pytest.fixture(autouse=True)
def _selections(monkeypatch):
    """The loops record selections with ``metrics.select``; the new gates are sparse ("nonzero")."""
    for gate in NEW:
        monkeypatch.setitem(metrics.SELECTIONS, gate, metrics.SELECTIONS.get(gate, "nonzero"))


def _replay_state(data, gate: str) -> dict[str, np.ndarray]:
    """The state after the first step, by the oracle: the step's training weights on the initial parameters."""
    pr = data.problem
    cfg = pr.gate_config(gate)
    params = data.init_gate_params(gate)
    inputs = step_inputs(data, 0, gate)
    state = initial_state(data, gate)
    h = cfg.hparams
    if pr.gating == "static":
        rows = [ref.gate_forward(cfg, {k: v[t] for k, v in params.items()}, None, training=True,
                                 state={k: v[t] for k, v in state.items()}).weights for t in range(pr.tasks)]
        q = np.stack(rows)
        load = (q != 0).astype(float)
        sparsity = (q == 0).mean(axis=-1)
    else:
        q = ref.gate_forward(cfg, params, inputs["x"], training=True, state=state).weights
        load, sparsity = ref.expert_load(q), ref.remoe_sparsity(q)
    if gate == "sigmoid_topk":
        return {"expert_bias": ref.sigmoid_topk_bias_step(state["expert_bias"], load, h["bias_rate"])}
    return {"l1_coef": ref.remoe_l1_step(state["l1_coef"], sparsity, h["l1_alpha"], cfg.target_sparsity)}


@pytest.mark.parametrize("gating", ["static", "per_example"])
@pytest.mark.parametrize("gate", ["sigmoid_topk", "remoe"])
def test_one_step_updates_the_state_as_the_oracle_does(gt, gf, gate, gating):
    from harness.recovery import train_tf, train_torch

    knobs = dict(SMALL, tasks=1) if gating == "per_example" else dict(SMALL)
    pr = RecoveryProblem(gating=gating, dtype="float64", steps=1, eval_every=1, **knobs)
    data = generate(pr, 3)
    want = _replay_state(data, gate)
    for loop in (train_torch, train_tf):
        result = loop.train(data, gate)
        assert result.final_state.keys() == want.keys()
        for key in want:
            np.testing.assert_allclose(result.final_state[key], want[key], rtol=1e-12, atol=1e-15,
                                       err_msg=f"{loop.__name__} {gate} {key}")


@pytest.mark.parity
@pytest.mark.parametrize("gating", ["static", "per_example"])
def test_torch_and_tf_agree_on_short_runs_of_the_new_gates(gt, gf, gating):
    from harness.recovery import train_tf, train_torch

    knobs = dict(SMALL, tasks=1) if gating == "per_example" else dict(SMALL)
    pr = RecoveryProblem(gating=gating, dtype="float64", steps=5, eval_every=5, **knobs)
    data = generate(pr, 4)
    for gate in NEW:
        a, b = train_torch.train(data, gate), train_tf.train(data, gate)
        assert a.first_grads.keys() == b.first_grads.keys() == initial_params(data, gate).keys()
        for key in a.first_grads:
            np.testing.assert_allclose(b.first_grads[key], a.first_grads[key], rtol=1e-9, atol=1e-12,
                                       err_msg=f"{gate} {key}")
        for key in a.final_state:
            np.testing.assert_allclose(b.final_state[key], a.final_state[key], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b.final_weights, a.final_weights, rtol=1e-7, atol=1e-9, err_msg=gate)
        if gate == "sigmoid_topk":  # five steps of bias_rate 1e-3 each: the bias moved
            assert np.abs(a.final_state["expert_bias"]).max() > 0
