"""Every gate function, in each framework, against the NumPy float64 reference; gradients against finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from gates import reference as ref
from gates import spec

from ._fw import assert_close, dselect_impls, finite_difference, value_and_grads

EXPERTS = [2, 5, 6, 16, 64, 256]
TOL = {"float64": 1e-10, "float32": 1e-5}


def _inputs(gate: str, n: int, rng: np.random.Generator) -> tuple[dict, list[np.ndarray]]:
    """Keyword arguments and positional inputs of one functional call, away from kinks (ties, band edges)."""
    k = min(3, n)
    if gate in spec.LOGIT_GATES:
        return {"k": k}, [rng.normal(size=(3, n)) * 2]
    if gate == "dselect_k":
        m = spec.num_code_bits(n)
        z = rng.uniform(-0.7, 0.7, size=(3, k, m))
        z[np.abs(np.abs(z) - 0.5) < 1e-3] = 0.1  # keep finite differences off the band edges
        return {"k": k}, [z, rng.normal(size=(3, k))]
    la = rng.normal(size=(3, n)) * 2
    return {"k": k}, [la, rng.uniform(0.02, 0.98, size=(3, n))]


def _call(module, gate: str, n: int, k: int, impl: str = "auto"):
    """The functional form of ``gate`` in ``module`` (a framework backend or ``gates.reference``)."""
    if gate == "softmax":
        return module.softmax_weights
    if gate == "topk":
        return lambda logits: module.topk_weights(logits, k)
    if gate == "sigmoid_topk":
        return lambda logits: module.sigmoid_topk_weights(logits, k)
    if gate in ("sparsemax", "entmax15"):
        return getattr(module, f"{gate}_weights")
    if gate == "remoe":
        return module.relu_weights
    if gate == "dselect_k":
        if module is ref:
            return lambda z, w: ref.dselect_k_weights(z, w, n, 1.0)
        return lambda z, w: module.dselect_k_weights(z, w, n, 1.0, impl=impl)
    return lambda la, u: module.hard_concrete_gates(la, u)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n", EXPERTS)
@pytest.mark.parametrize("gate", spec.GATE_NAMES)
def test_forward_matches_reference(G, gate, n, dtype, rng):
    kw, inputs = _inputs(gate, n, rng)
    want = _call(ref, gate, n, kw["k"])(*inputs)
    impls = dselect_impls(G) if gate == "dselect_k" else ("auto",)
    for impl in impls:
        got, _ = value_and_grads(G, _call(G, gate, n, kw["k"], impl), inputs, dtype=dtype)
        assert_close(f"{gate}[{impl}] weights, n={n}, {dtype}", got, want, atol=TOL[dtype])


@pytest.mark.parametrize("n", EXPERTS)
@pytest.mark.parametrize("gate", spec.GATE_NAMES)
def test_gradients_match_finite_differences(G, gate, n, rng):
    kw, inputs = _inputs(gate, n, rng)
    ref_fn = _call(ref, gate, n, kw["k"])
    want_out = ref_fn(*inputs)
    cot = rng.normal(size=want_out.shape)
    # Only differentiable inputs: hard concrete's noise u is data, not a parameter, but its gradient exists too.
    impls = dselect_impls(G) if gate == "dselect_k" else ("auto",)
    for impl in impls:
        _, grads = value_and_grads(G, _call(G, gate, n, kw["k"], impl), inputs, cot)
        for i, (arr, got) in enumerate(zip(inputs, grads, strict=True)):

            def scalar(a, i=i):
                args = list(inputs)
                args[i] = a
                return float((ref_fn(*args) * cot).sum())

            want = finite_difference(scalar, arr)
            assert_close(f"{gate}[{impl}] d/d input {i}, n={n}", got, want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("n", [5, 16, 64])
def test_regularisers_match_reference(G, n, rng):
    k, m = 3, spec.num_code_bits(n)
    z = rng.uniform(-0.7, 0.7, size=(4, k, m))
    la = rng.normal(size=(4, n))
    weights = ref.topk_weights(rng.normal(size=(6, n)), k)
    cases = [
        ("entropy", lambda t: G.dselect_k_entropy(t, n, 1.0), lambda a: ref.dselect_k_entropy(a, n, 1.0), z),
        (
            "unreachable",
            lambda t: G.dselect_k_unreachable_penalty(t, n, 1.0),
            lambda a: ref.dselect_k_unreachable_penalty(a, n, 1.0),
            z,
        ),
        ("l0", G.hard_concrete_l0, ref.hard_concrete_l0, la),
        ("cv2", G.load_balance_cv2, lambda a: np.asarray(ref.load_balance_cv2(a)), weights),
    ]
    for name, fn, ref_fn, arr in cases:
        want = ref_fn(arr)
        cot = np.ones_like(want)
        got, (grad,) = value_and_grads(G, fn, [arr], cot)
        assert_close(f"{name}, n={n}", got, want, atol=1e-10)
        fd = finite_difference(lambda a, ref_fn=ref_fn: float(np.sum(ref_fn(a))), arr)
        assert_close(f"d {name}, n={n}", grad, fd, atol=1e-6, rtol=1e-6)


def test_topk_ties_go_to_the_lower_index(G):
    logits = np.array([[1.0, 3.0, 2.0, 3.0, 2.0, 2.0]])
    got, _ = value_and_grads(G, lambda t: G.topk_weights(t, 3), [logits])
    want_support = np.array([[False, True, True, True, False, False]])
    np.testing.assert_array_equal(got > 0, want_support)
    np.testing.assert_array_equal(ref.topk_weights(logits, 3) > 0, want_support)


def test_bfloat16_inputs_accumulate_in_float32(G, rng):
    n, k = 64, 4
    z = rng.uniform(-0.7, 0.7, size=(8, k, 6))
    w = rng.normal(size=(8, k))
    want = ref.dselect_k_weights(z, w, n)
    got, _ = value_and_grads(G, lambda a, b: G.dselect_k_weights(a, b, n), [z, w], dtype="bfloat16")
    # bfloat16 keeps 8 bits of mantissa: the inputs are rounded to ~4e-3 relative; the sum to 1 stays float32-exact.
    assert_close("bf16 weights", got, want, atol=2e-2)
    assert abs(got.sum(-1) - 1).max() < 1e-2
