"""Cases and the accuracy check, framework free: row labels, inputs, tolerances, kinks and ties, finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from gates import reference
from harness import accuracy, cases
from harness.cases import Case


def _case(gate="topk", framework="torch", impl="eager", mode="fwdbwd", gating="per_example", dtype="float32",
          experts=8, k=2, **hparams) -> Case:
    shape = (16, 4) if gating == "per_example" else (None, None)
    return Case(gate, framework, "cpu", impl, mode, gating, *shape, experts, k, dtype,
                hparams=tuple(hparams.items()))


@pytest.mark.parametrize(("gate", "framework", "impl", "want"), [
    ("dselect_k", "torch", "eager", ("factorized", "none")),
    ("dselect_k", "tf", "eager", ("factorized", "xla")),  # TF's factorized DSelect-k is one XLA function
    ("dselect_k", "tf", "bitwise", ("bitwise", "none")),
    ("dselect_k", "torch", "reference", ("reference", "none")),
    ("dselect_k", "torch", "triton", ("triton", "none")),
    ("dselect_k", "torch", "compiled", ("factorized", "inductor")),
    ("dselect_k", "tf", "compiled", ("factorized", "xla")),
    ("topk", "tf", "eager", ("default", "none")),
    ("softmax", "torch", "compiled", ("default", "inductor")),
    ("hard_concrete", "tf", "compiled", ("default", "xla")),
])
def test_labels_name_the_resolved_gate_impl_and_the_compiler(gate, framework, impl, want):
    case = _case(gate=gate, framework=framework, impl=impl)
    labels = cases.labels(case)
    assert (labels["gate_impl"], labels["compiler"]) == want
    assert labels["compiler"] in cases.COMPILERS
    assert cases.make_gate_impl(case) == (impl if impl in cases.DSELECT_ONLY_IMPLS else "auto")


def test_inputs_are_gate_params_x_c_noise_and_seeded():
    case = _case(gate="hard_concrete")
    a, b = cases.make_inputs(case), cases.make_inputs(case)
    assert sorted(a.gate_params) == sorted(case.config().param_shapes())
    assert a.x.shape == (16, 4) and a.c.shape == (16, 8) and a.noise.shape == (16, 8)
    assert all(np.array_equal(a.gate_params[key], b.gate_params[key]) for key in a.gate_params)
    assert 0 < a.noise.min() and a.noise.max() < 1


def test_from_params_names_unknown_columns():
    case = _case()
    assert Case.from_params(case.params()) == case
    with pytest.raises(ValueError, match="columns: unknown keys"):
        Case.from_params({**case.params(), "colour": "red"})


def test_compare_grads_reports_the_worst_tensor_and_bad_input():
    want = {"a": np.ones(3), "b": np.full(2, 10.0)}
    err, where = accuracy.compare_grads({"a": np.ones(3), "b": np.array([10.0, 11.0])}, want)
    assert (err, where) == (pytest.approx(0.1), "b")
    with pytest.raises(ValueError, match="gradients: 'b' missing"):
        accuracy.compare_grads({"a": np.ones(3)}, want)
    with pytest.raises(ValueError, match="gradients: 'a' has shape"):
        accuracy.compare_grads({"a": np.ones(4), "b": np.ones(2)}, want)


def test_ambiguous_topk_rows_are_ties_at_the_dtype_precision():
    case = _case(experts=4, k=2)
    gate_params = {"kernel": np.zeros((4, 4)), "bias": np.array([3.0, 2.0, 2.0 + 1e-6, 0.0])}
    x = np.zeros((16, 4))
    x[1, 0] = 1.0
    gate_params["kernel"][0] = [1.0, 0.0, 0.5, 0.0]  # row 1: logits 4, 2, 2.5, 0; the others tie at 2 and 2 + 1e-6
    amb = accuracy.ambiguous_topk_rows(case, gate_params, x, None, training=False)
    assert amb.shape == (16,) and not amb[1] and amb[[0, *range(2, 16)]].all()
    assert not accuracy.ambiguous_topk_rows(_case(experts=4, k=2, dtype="float64"), gate_params, x, None,
                                            training=False).any()  # float64 separates 1e-6
    assert not accuracy.ambiguous_topk_rows(_case(gate="softmax"), {}, x, None, training=False).any()


def test_near_clip_rows_and_check_c_zero_the_rows_on_a_kink():
    case = _case(gate="hard_concrete", gating="static", experts=4, k=1)
    inputs = cases.make_inputs(case)
    assert not accuracy.near_clip_rows(case, inputs.gate_params, None, inputs.noise).any()
    # a stretched gate of exactly 1 in expert 0: sigmoid(s) (1.1 + 0.1) - 0.1 = 1 at s = logit(11 / 12)
    beta = case.config().hparams["beta"]
    u = np.full(4, 0.5)
    log_alpha = np.array([beta * np.log(11.0), 0.0, 0.0, 0.0])
    assert reference.hard_concrete_stretched(log_alpha, u, beta)[0] == pytest.approx(1.0)
    near = accuracy.near_clip_rows(case, {"log_alpha": log_alpha}, None, u)
    assert near.tolist() == [True]
    kinked = cases.CaseInputs({"log_alpha": log_alpha}, None, inputs.c, u)
    assert not accuracy.check_c(case, kinked).any()  # static: all of c
    assert np.array_equal(accuracy.check_c(case, inputs), inputs.c)


def test_evaluate_accuracy_flags_wrong_weights_and_shapes():
    case = _case(gate="softmax", mode="fwd")
    inputs = cases.make_inputs(case)
    want = reference.gate_forward(case.config(), inputs.gate_params, inputs.x).weights
    ok = accuracy.evaluate_accuracy(case, inputs.gate_params, inputs.x, None, want + 1e-6)
    assert ok["ok"] and ok["max_abs_err"] == pytest.approx(1e-6) and ok["max_grad_err"] is None
    bad = accuracy.evaluate_accuracy(case, inputs.gate_params, inputs.x, None, want * 1.01)
    assert not bad["ok"] and "gates.reference" in bad["error"] and "tolerance 0.0002" in bad["error"]
    shape = accuracy.evaluate_accuracy(case, inputs.gate_params, inputs.x, None, want[:, :3])
    assert not shape["ok"] and shape["max_abs_err"] is None and "shape" in shape["error"]


def test_finite_differences_catch_a_wrong_float64_gradient():
    case = _case(gate="softmax", gating="static", experts=4, k=1)
    inputs = cases.make_inputs(case)
    logits = inputs.gate_params["logits"]
    q = reference.softmax_weights(logits)
    exact = {"logits": q * (inputs.c - np.sum(q * inputs.c))}  # d/dlogits sum(softmax(logits) * c)
    assert accuracy.finite_difference_error(case, inputs.gate_params, None, None, inputs.c, exact) < 1e-8
    out = accuracy.add_finite_difference_check({"ok": True}, case, inputs.gate_params, None, None, inputs.c,
                                               {"logits": 1.1 * exact["logits"]})
    assert not out["ok"] and "finite differences" in out["error"] and out["fd_grad_err"] > accuracy.FD_TOLERANCE
