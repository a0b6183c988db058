"""The newer routers: sigmoid_topk (DeepSeek-V3, aux-loss-free bias), sparsemax and entmax15, ReMoE, and the router
z-loss and Switch balance regularisers: against transcriptions of torchtitan, Megatron-Core and the entmax package,
the oracle, both frameworks, and their properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gates import reference as ref
from gates import spec

from ._fw import assert_close, gate_run, name_of, value_and_grads

NEW = ("sigmoid_topk", "sparsemax", "entmax15", "remoe")


# --------------------------------------------------------------------------------------------------------------
# Transcriptions of the public code the gates follow (PyTorch; the TF gates are compared with the oracle).
# --------------------------------------------------------------------------------------------------------------
def _torchtitan_router(torch, logits, expert_bias, top_k, route_norm):
    """torchtitan's ``TokenChoiceTopKRouter.forward`` (v0.2.2: torchtitan/models/moe/moe.py, the lines from
    ``scores = torch.sigmoid(...)`` to ``top_scores * self.route_scale``; main: torchtitan/models/common/moe.py) with
    ``score_func="sigmoid"``, no expert groups, ``route_scale=1``: scores = sigmoid(gate(x)); top-k of
    scores + expert_bias; gather the unbiased scores; ``route_norm`` divides by their sum + 1e-20. Returned as dense
    ``(T, E)`` weights."""
    scores = torch.sigmoid(logits)
    scores_for_choice = scores if expert_bias is None else scores + expert_bias
    _, ids = torch.topk(scores_for_choice, k=top_k, dim=-1, sorted=False)
    top_scores = scores.gather(dim=-1, index=ids)
    if route_norm:
        top_scores = top_scores / (top_scores.sum(dim=-1, keepdim=True) + 1e-20)
    return torch.zeros_like(scores).scatter(-1, ids, top_scores)


def _torchtitan_bias_update(torch, expert_bias, tokens_per_expert, coeff):
    """torchtitan's ``_update_expert_bias`` (v0.2.2: torchtitan/components/optimizer.py; main:
    torchtitan/components/optimizer/optimizer.py), the ``expert_bias_delta`` lines: delta = coeff *
    sign(mean(tokens) - tokens), centred by its mean, added to the bias."""
    delta = coeff * torch.sign(tokens_per_expert.mean() - tokens_per_expert)
    return expert_bias + (delta - delta.mean())


def _megatron_z_loss(torch, logits, coeff):
    """Megatron-Core, megatron/core/transformer/moe/moe_utils.py, ``z_loss_func`` (no padding mask)."""
    return torch.mean(torch.square(torch.logsumexp(logits, dim=-1))) * coeff


def _megatron_switch(torch, probs, tokens_per_expert, total_num_tokens, topk, num_experts, coeff):
    """Megatron-Core, megatron/core/transformer/moe/moe_utils.py, ``switch_load_balancing_loss_func`` (unfused)."""
    aggregated_probs_per_expert = probs.sum(dim=0)
    return torch.sum(aggregated_probs_per_expert * tokens_per_expert) * (
        num_experts * coeff / (topk * total_num_tokens * total_num_tokens)
    )


@pytest.mark.parametrize("normalize", [True, False])
def test_sigmoid_topk_equals_torchtitans_router(gt, normalize, rng):
    import torch

    n, k, p, b = 16, 4, 12, 40
    gate = gt.make_gate("sigmoid_topk", n, k, p, dtype="float64", normalize=normalize)
    params = {key: v + rng.normal(size=v.shape) for key, v in gate.config.init_params(rng).items()}
    gate.set_numpy_params(params)
    bias = rng.normal(size=n) * 0.1
    gate.set_numpy_state({"expert_bias": bias})
    x = torch.tensor(rng.normal(size=(b, p)))
    got = gate.eval()(x)
    logits = x @ gate.kernel + gate.bias  # torchtitan's gate: a Linear layer
    want = _torchtitan_router(torch, logits, torch.tensor(bias), k, route_norm=normalize)
    assert_close("sigmoid_topk vs torchtitan", got.detach().numpy(), want.detach().numpy(), atol=1e-12)
    # the bias changes the selection, never the gradient: torchtitan's expert bias is a buffer
    gate.train()
    gate(x).sum().backward()
    assert "expert_bias" not in dict(gate.named_parameters()) and not gate.expert_bias.requires_grad


def test_bias_update_equals_torchtitans_and_the_paper(gt, rng):
    import torch

    n = 8
    tokens = torch.tensor(rng.integers(0, 20, size=n), dtype=torch.float64)
    bias = torch.tensor(rng.normal(size=n) * 0.01)
    got = gt.sigmoid_topk_bias_step(bias, tokens, 1e-3, centered=True)
    want = _torchtitan_bias_update(torch, bias, tokens, 1e-3)
    assert_close("centred bias step", got.numpy(), want.numpy(), atol=1e-15)
    paper = gt.sigmoid_topk_bias_step(bias, tokens, 1e-3)  # arXiv 2408.15664: bias += u sign(mean - load)
    assert_close("paper bias step", paper.numpy(), (bias + 1e-3 * torch.sign(tokens.mean() - tokens)).numpy(),
                 atol=1e-15)


def test_router_regularisers_equal_megatrons(gt, rng):
    import torch

    b, n, k = 30, 8, 2
    logits = torch.tensor(rng.normal(size=(b, n)) * 2)
    assert float(gt.router_z_loss(logits)) * 0.1 == pytest.approx(float(_megatron_z_loss(torch, logits, 0.1)),
                                                                   rel=1e-12)
    probs = torch.softmax(logits, dim=-1)
    q = gt.topk_weights(logits, k)
    tokens = (q > 0).sum(dim=0).to(torch.float64)  # Megatron's routing_map summed over tokens
    want = _megatron_switch(torch, probs, tokens, b, k, n, 0.2)
    assert float(gt.switch_balance_loss(probs, q, k)) * 0.2 == pytest.approx(float(want), rel=1e-12)
    assert ref.switch_balance_loss(probs.numpy(), q.numpy(), k) * 0.2 == pytest.approx(float(want), rel=1e-12)
    assert ref.router_z_loss(logits.numpy()) == pytest.approx(float(gt.router_z_loss(logits)), rel=1e-12)


# --------------------------------------------------------------------------------------------------------------
# sparsemax and entmax15: every framework and the oracle equal the entmax package.
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n", [2, 5, 16, 64, 256])
@pytest.mark.parametrize("gate", ["sparsemax", "entmax15"])
def test_sparse_maps_equal_the_entmax_package(G, gate, n, dtype, rng):
    import entmax
    import torch

    logits = rng.normal(size=(6, n)) * 3
    cot = rng.normal(size=(6, n))
    tl = torch.tensor(logits, requires_grad=True)
    want = getattr(entmax, gate)(tl, dim=-1)
    (want * torch.as_tensor(cot)).sum().backward()
    got, (grad,) = value_and_grads(G, getattr(G, f"{gate}_weights"), [logits], cot, dtype=dtype)
    tol = 1e-10 if dtype == "float64" else 1e-5
    assert_close(f"{gate} {name_of(G)} vs entmax", got, want.detach().numpy(), atol=tol)
    assert_close(f"{gate} {name_of(G)} grad vs entmax", grad, tl.grad.numpy(), atol=tol * 10, rtol=tol * 10)
    assert_close(f"{gate} oracle vs entmax", getattr(ref, f"{gate}_weights")(logits), want.detach().numpy(),
                 atol=1e-12)


def test_sparsemax_and_entmax15_known_values(G):
    z = np.array([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    got, _ = value_and_grads(G, G.sparsemax_weights, [z])
    np.testing.assert_allclose(got, [[1.0, 0.0, 0.0], [1 / 3] * 3, [1.0, 0.0, 0.0]], atol=1e-12)
    got, _ = value_and_grads(G, G.entmax15_weights, [np.array([[0.0, 0.0], [4.0, 0.0]])])
    np.testing.assert_allclose(got, [[0.5, 0.5], [1.0, 0.0]], atol=1e-12)


# --------------------------------------------------------------------------------------------------------------
# Properties.
# --------------------------------------------------------------------------------------------------------------
FINITE = st.floats(-20, 20, allow_nan=False, allow_subnormal=False, width=64)  # TF flushes subnormals to 0


def _rows(max_n: int = 12):
    return st.integers(2, max_n).flatmap(lambda n: hnp.arrays(np.float64, (3, n), elements=FINITE))


def test_sigmoid_topk_breaks_exact_ties_to_the_lower_index_in_every_row(G):
    # hypothesis found it: TensorFlow's sigmoid rounded the last of nine equal inputs apart from the others, so a
    # selection on the scores picked index 2 in the last row; the selection (without a bias) is on the logits
    logits = np.full((3, 3), -10.0)
    q, _ = value_and_grads(G, lambda t: G.sigmoid_topk_weights(t, 1, None, False), [logits])
    assert (q[:, 0] > 0).all() and (q[:, 1:] == 0).all()
    np.testing.assert_allclose(q, ref.sigmoid_topk_weights(logits, 1, None, False), atol=1e-12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(logits=_rows(), k=st.integers(1, 4), normalize=st.booleans())
def test_sigmoid_topk_has_exactly_k_nonzeros_and_sums_to_one_when_normalised(G, logits, k, normalize):
    k = min(k, logits.shape[-1])
    if k < logits.shape[-1]:  # unequal logits whose scores are within rounding at the k-th place: the selected
        # expert may differ between sigmoid implementations (equal logits go to the lower index everywhere)
        top, lt = -np.sort(-1.0 / (1.0 + np.exp(-logits)), axis=-1), -np.sort(-logits, axis=-1)
        apart = top[:, k - 1] - top[:, k] > 1e-12 * np.abs(top[:, k - 1])
        assume(np.all(apart | (lt[:, k - 1] == lt[:, k])))
    q, _ = value_and_grads(G, lambda t: G.sigmoid_topk_weights(t, k, None, normalize), [logits])
    assert ((q > 0).sum(axis=-1) == k).all()
    if normalize:
        np.testing.assert_allclose(q.sum(axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(q, ref.sigmoid_topk_weights(logits, k, None, normalize), atol=1e-12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(logits=_rows(), gate=st.sampled_from(["sparsemax", "entmax15"]))
def test_sparse_maps_are_distributions_whose_gradients_sum_to_zero(G, logits, gate):
    cot = np.ones_like(logits)  # d sum(q) / dz = 0: the weights always sum to 1
    q, (grad,) = value_and_grads(G, getattr(G, f"{gate}_weights"), [logits], cot)
    assert (q >= 0).all()
    np.testing.assert_allclose(q.sum(axis=-1), 1.0, atol=1e-9)
    np.testing.assert_allclose(grad, 0.0, atol=1e-9)
    np.testing.assert_allclose(q, getattr(ref, f"{gate}_weights")(logits), atol=1e-9)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(logits=_rows())
def test_relu_weights_are_sparse_with_unit_gradient_on_the_support(G, logits):
    cot = np.ones_like(logits)
    q, (grad,) = value_and_grads(G, G.relu_weights, [logits], cot)
    np.testing.assert_array_equal(q, np.maximum(logits, 0.0))
    np.testing.assert_array_equal(grad, (logits > 0).astype(float))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(logits=_rows(), bias=hnp.arrays(np.float64, 12, elements=st.floats(-1, 1, width=64)))
def test_the_bias_moves_the_selection_and_gets_no_gradient(G, logits, bias):
    n, k = logits.shape[-1], 2
    b = bias[:n]
    cot = np.random.default_rng(0).normal(size=logits.shape)
    q, (g_logits, g_bias) = value_and_grads(G, lambda t, c: G.sigmoid_topk_weights(t, k, c), [logits, b], cot)
    np.testing.assert_array_equal(g_bias, 0.0)
    np.testing.assert_allclose(q, ref.sigmoid_topk_weights(logits, k, b), atol=1e-12)


# --------------------------------------------------------------------------------------------------------------
# State and its steps in the modules; torch/TF parity.
# --------------------------------------------------------------------------------------------------------------
def _weights(G, gate, x):
    out = gate_run(G, gate, x, training=True)
    return out["weights"]


@pytest.mark.parametrize("centered", [False, True])
def test_update_bias_in_both_frameworks_matches_the_oracle(gt, gf, centered, rng):
    n, k, p = 8, 2, 5
    config = spec.make_config("sigmoid_topk", n, k, p, bias_rate=0.05, bias_centered=centered)
    params = {key: v + rng.normal(size=v.shape) for key, v in config.init_params(rng).items()}
    x = rng.normal(size=(32, p))
    state = config.init_state()
    gates = [G.make_gate("sigmoid_topk", n, k, p, dtype="float64", bias_rate=0.05, bias_centered=centered)
             for G in (gt, gf)]
    for gate in gates:
        gate.set_numpy_params(params)
    for _ in range(3):
        want = ref.gate_forward(config, params, x, training=True, state=state).weights
        for G, gate in zip((gt, gf), gates, strict=True):
            q = _weights(G, gate, x)
            assert_close(f"{name_of(G)} weights with bias", q, want, atol=1e-12)
            gate.update_bias(q)
        load = ref.expert_load(want)
        state = {"expert_bias": ref.sigmoid_topk_bias_step(state["expert_bias"], load, 0.05, centered)}
        for gate in gates:
            assert_close("expert_bias", gate.get_numpy_state()["expert_bias"], state["expert_bias"], atol=1e-12)
    assert "expert_bias" not in gates[0].get_numpy_params() and "expert_bias" not in gates[1].get_numpy_params()
    assert np.any(state["expert_bias"] != 0)


def test_update_bias_takes_counts_too(G):
    gate = G.make_gate("sigmoid_topk", 4, 2, dtype="float64", bias_rate=0.1)
    gate.update_bias(np.array([3.0, 1.0, 0.0, 4.0]))
    np.testing.assert_allclose(gate.get_numpy_state()["expert_bias"], [-0.1, 0.1, 0.1, -0.1])


@pytest.mark.parametrize("balanced", [False, True])
def test_remoe_l1_term_and_coefficient_step(gt, gf, balanced, rng):
    n, k, p = 8, 2, 5
    hp = {"l1_init": 0.3, "l1_balanced": balanced}
    config = spec.make_config("remoe", n, k, p, **hp)
    params = {key: v + rng.normal(size=v.shape) for key, v in config.init_params(rng).items()}
    x = rng.normal(size=(16, p))
    coef = 0.3
    for G in (gt, gf):
        gate = G.make_gate("remoe", n, k, p, dtype="float64", **hp)
        gate.set_numpy_params(params)
        out = gate_run(G, gate, x, training=True)
        want = ref.gate_forward(config, params, x, training=True)
        q = want.weights
        l1 = ref.switch_balance_loss(q, q, k) if balanced else float(np.mean(q.sum(axis=-1)))
        assert out["reg"] == pytest.approx(coef * l1, rel=1e-12)
        assert want.regularization == pytest.approx(coef * l1, rel=1e-12)
        gate.update_l1_coef(out["weights"])
        sparsity = float(np.mean(q == 0))
        step = 1.2 ** np.sign((1 - k / n) - sparsity)
        assert float(gate.get_numpy_state()["l1_coef"]) == pytest.approx(coef * step, rel=1e-12)


def test_remoe_coefficient_rises_while_too_dense_and_falls_while_too_sparse(G):
    gate = G.make_gate("remoe", 4, 1, dtype="float64", l1_init=1.0)
    gate.update_l1_coef(np.ones((2, 4)))  # sparsity 0 < target 0.75: stronger L1
    assert float(gate.get_numpy_state()["l1_coef"]) == pytest.approx(1.2)
    gate.update_l1_coef(np.zeros((2, 4)))  # sparsity 1 > target: weaker
    gate.update_l1_coef(np.zeros((2, 4)))
    assert float(gate.get_numpy_state()["l1_coef"]) == pytest.approx(1 / 1.2)


@pytest.mark.parametrize("per_example", [False, True], ids=["static", "per_example"])
@pytest.mark.parametrize("name", ["softmax", "topk"])
def test_router_regularisers_on_softmax_and_topk_match_the_oracle(G, name, per_example, rng):
    n, k = 6, 2
    p = 5 if per_example else None
    hp = {"z_loss": 0.05, "switch_balance": 0.3}
    config = spec.make_config(name, n, k, p, **hp)
    params = {key: v + rng.normal(size=v.shape) for key, v in config.init_params(rng).items()}
    x = rng.normal(size=(7, p)) if per_example else None
    gate = G.make_gate(name, n, k, p, dtype="float64", **hp)
    gate.set_numpy_params(params)
    out = gate_run(G, gate, x, training=True, cotangent=np.zeros((7, n) if per_example else (n,)))
    want = ref.gate_forward(config, params, x, training=True)
    assert out["reg"] == pytest.approx(want.regularization, rel=1e-12)
    logits = ref.routing_logits(config, params, x)
    expected = 0.05 * ref.router_z_loss(logits) + 0.3 * ref.switch_balance_loss(
        ref.softmax_weights(logits), want.weights, k)
    assert want.regularization == pytest.approx(expected, rel=1e-12)
    # the gradient of the regulariser alone against finite differences of the oracle
    eps, key = 1e-6, "logits" if not per_example else "bias"
    fd = np.zeros(n)
    for i in range(n):
        hi, lo = {**params, key: params[key].copy()}, {**params, key: params[key].copy()}
        hi[key][i] += eps
        lo[key][i] -= eps
        fd[i] = (ref.gate_forward(config, hi, x, training=True).regularization
                 - ref.gate_forward(config, lo, x, training=True).regularization) / (2 * eps)
    assert_close(f"{name} d reg / d {key}", out["grad_" + key], fd, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", NEW)
def test_state_round_trips_and_is_the_same_in_both_frameworks(gt, gf, name):
    a, b = gt.make_gate(name, 6, 2, 3, dtype="float64"), gf.make_gate(name, 6, 2, 3, dtype="float64")
    sa, sb = a.get_numpy_state(), b.get_numpy_state()
    assert {key: v.shape for key, v in sa.items()} == spec.make_config(name, 6, 2, 3).state_shapes()
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key])
        assert key not in a.get_numpy_params() and key not in b.get_numpy_params()
    new = {key: v + 0.5 for key, v in sa.items()}
    for gate in (a, b):
        gate.set_numpy_state(new)
        for key in new:
            np.testing.assert_array_equal(gate.get_numpy_state()[key], new[key])


# --------------------------------------------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------------------------------------------
BAD = [
    (dict(name="sigmoid_topk", normalize=1), "normalize"),
    (dict(name="sigmoid_topk", bias_rate=-1e-3), "bias_rate"),
    (dict(name="sigmoid_topk", bias_centered="yes"), "bias_centered"),
    (dict(name="remoe", target_sparsity=1.0), "target_sparsity"),
    (dict(name="remoe", l1_alpha=1.0), "l1_alpha"),
    (dict(name="remoe", l1_init=0.0), "l1_init"),
    (dict(name="remoe", l1_balanced=None), "l1_balanced"),
    (dict(name="sparsemax", z_loss=-1), "z_loss"),
    (dict(name="entmax15", switch_balance=float("nan")), "switch_balance"),
]


@pytest.mark.parametrize("kwargs,arg", BAD, ids=[a for _, a in BAD])
def test_bad_hyper_parameters_are_rejected(G, kwargs, arg):
    kwargs = dict(kwargs)
    with pytest.raises(ValueError, match=rf"^{arg}: expected .*; got"):
        G.make_gate(kwargs.pop("name"), 6, 2, **kwargs)


def test_regularisers_of_other_gates_are_not_accepted():
    with pytest.raises(ValueError, match=r"^hparams: expected only .* got unknown z_loss"):
        spec.make_config("dselect_k", 8, 2, z_loss=0.1)


def test_bad_state_and_steps_are_rejected(G):
    gate = G.make_gate("sigmoid_topk", 4, 2)
    with pytest.raises(ValueError, match=r"^weights_or_counts: expected weights \(batch, 4\) or counts"):
        gate.update_bias(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"^state\['expert_bias'\]: expected shape \(4,\); got"):
        gate.set_numpy_state({"expert_bias": np.zeros(3)})
    with pytest.raises(ValueError, match=r"^state: expected exactly the keys"):
        gate.set_numpy_state({})
    with pytest.raises(ValueError, match=r"^gate: expected a remoe gate for update_l1_coef; got 'sigmoid_topk'"):
        gate.update_l1_coef(np.zeros((2, 4)))
    remoe = G.make_gate("remoe", 4, 2)
    with pytest.raises(ValueError, match=r"^gate: expected a sigmoid_topk gate for update_bias; got 'remoe'"):
        remoe.update_bias(np.zeros(4))
    with pytest.raises(ValueError, match=r"^state\['l1_coef'\]: expected positive values"):
        remoe.set_numpy_state({"l1_coef": np.array(0.0)})
    with pytest.raises(ValueError, match=r"^weights: expected last dimension 4"):
        remoe.update_l1_coef(np.zeros((2, 3)))


def test_the_recipe_needs_the_state_of_a_stateful_gate(G):
    from gates import recipe

    config = spec.make_config("sigmoid_topk", 4, 2)
    gate = G.make_gate("sigmoid_topk", 4, 2)
    with pytest.raises(ValueError, match=r"^state: expected the keys \['expert_bias'\] for gate 'sigmoid_topk'"):
        recipe.gate_forward(G, config, gate.params)


def test_the_new_gates_are_listed():
    assert set(NEW) <= set(spec.GATE_NAMES)
    assert set(NEW) <= set(spec.LOGIT_GATES)
