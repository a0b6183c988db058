"""Hostile inputs: each probe gives the same outcome in both frameworks (the same error message start, or the same
output dtype and shape). Policy: docs/gates.md, "Input checks"."""

from __future__ import annotations

import numpy as np
import pytest

from gates import spec

from ._fw import name_of


def _tensor(G, a, dtype):
    if name_of(G) == "torch":
        import torch

        return torch.as_tensor(np.asarray(a)).to(getattr(torch, dtype))
    import tensorflow as tf

    return tf.cast(tf.constant(np.asarray(a)), dtype)


def _other_framework(G, a):
    if name_of(G) == "torch":
        import tensorflow as tf

        return tf.constant(a)
    import torch

    return torch.as_tensor(a)


def _dtype_name(t) -> str:
    return spec.dtype_name(t.dtype)


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16", "float32"])
@pytest.mark.parametrize("gate", ["dselect_k", "topk"])
def test_a_floating_input_is_cast_to_the_gates_dtype(G, gate, dtype):
    g = G.make_gate(gate, 4, 2, input_dim=3)
    q = g(_tensor(G, np.full((2, 3), 0.25), dtype))
    assert _dtype_name(q) == "float32" and tuple(q.shape) == (2, 4)


@pytest.mark.parametrize("dtype", ["int32", "int64", "complex64", "bool"])
def test_a_non_floating_input_is_rejected(G, dtype):
    g = G.make_gate("softmax", 4, 2, input_dim=3)
    with pytest.raises(ValueError, match=rf"^x: expected a floating-point tensor \(.*\); got dtype {dtype}$"):
        g(_tensor(G, np.zeros((2, 3)), dtype))


@pytest.mark.parametrize("kind", ["numpy", "list", "other framework"])
def test_an_input_that_is_not_a_tensor_of_the_framework_is_rejected(G, kind):
    a = np.zeros((2, 3), np.float32)
    x = {"numpy": a, "list": a.tolist(), "other framework": None}[kind]
    x = _other_framework(G, a) if x is None else x
    want = "torch.Tensor" if name_of(G) == "torch" else "tf.Tensor"
    g = G.make_gate("topk", 4, 2, input_dim=3)
    with pytest.raises(ValueError, match=rf"^x: expected a {want}; got "):
        g(x)
    with pytest.raises(ValueError, match=rf"^logits: expected a {want}; got "):
        G.softmax_weights(x)
    with pytest.raises(ValueError, match=rf"^z_logits: expected a {want}; got "):
        G.dselect_k_weights(x, x, 4)


def test_the_functional_forms_reject_a_non_floating_tensor(G):
    ints = _tensor(G, np.zeros((2, 4)), "int32")
    for fn, arg in [(G.softmax_weights, "logits"), (lambda t: G.topk_weights(t, 2), "logits"),
                    (G.hard_concrete_gates, "log_alpha"), (G.relu_weights, "logits")]:
        with pytest.raises(ValueError, match=rf"^{arg}: expected a floating-point tensor"):
            fn(ints)


def test_a_torch_input_on_another_device_is_rejected(gt):
    import torch

    g = gt.make_gate("topk", 4, 2, input_dim=3)
    with pytest.raises(ValueError, match=r"^x: expected a tensor on the gate's device cpu; got one on meta$"):
        g(torch.zeros(2, 3, device="meta"))


def test_make_gate_rejects_a_device_that_does_not_exist(G):
    bad = "cuda" if name_of(G) == "torch" else "tpu_that_is_not_here"
    if name_of(G) == "torch":
        import torch

        if torch.cuda.is_available():
            bad = f"cuda:{torch.cuda.device_count()}"
    for device in (bad, "GPU:7") if name_of(G) == "tf" else (bad,):
        with pytest.raises(ValueError, match=rf"^device: expected a device available here \(.*(cpu|CPU).*\); "
                                              rf"got '{device}'"):
            G.make_gate("topk", 4, 2, device=device)
    g = G.make_gate("topk", 4, 2, input_dim=3, device="cpu")  # an existing device builds
    assert tuple(g(_tensor(G, np.zeros((2, 3)), "float32")).shape) == (2, 4)


@pytest.mark.parametrize("gamma", [1e300, 1e101, 1e13, 1e-13, 0.0, -1.0, float("nan"), float("inf")])
def test_a_gamma_whose_arithmetic_overflows_is_rejected(G, gamma):
    with pytest.raises(ValueError, match=r"^gamma: expected a "):
        G.make_gate("dselect_k", 4, 2, gamma=gamma)
    with pytest.raises(ValueError, match=r"^gamma: expected a "):
        G.smooth_step(_tensor(G, np.zeros(3), "float32"), gamma)
    z, w = _tensor(G, np.zeros((2, 2, 2)), "float32"), _tensor(G, np.zeros((2, 2)), "float32")
    with pytest.raises(ValueError, match=r"^gamma: expected a "):
        G.dselect_k_weights(z, w, 4, gamma)


@pytest.mark.parametrize("gamma", [1e-12, 1e12])
def test_gamma_at_the_bounds_gives_finite_weights(G, gamma):
    g = G.make_gate("dselect_k", 4, 2, input_dim=3, gamma=gamma)
    q = g(_tensor(G, np.full((2, 3), 0.5), "float32"))
    q = q.detach().numpy() if name_of(G) == "torch" else q.numpy()
    assert q.shape == (2, 4) and np.isfinite(q).all()


def test_check_dtype_accepts_framework_dtype_objects(G):
    if name_of(G) == "torch":
        import torch as fw
    else:
        import tensorflow as fw
    assert spec.check_dtype(fw.float32) == "float32"
    assert spec.check_dtype(fw.float64) == "float64"
    assert spec.check_dtype(fw.bfloat16) == "bfloat16"
    assert spec.check_dtype(np.float32) == "float32"
    with pytest.raises(ValueError, match=r"^dtype: expected one of float32, float64, bfloat16; got "):
        spec.check_dtype(fw.float16)
    g = G.make_gate("softmax", 4, 2, dtype=fw.float64)
    assert _dtype_name(g()) == "float64"


_EMPTY_HPARAMS = {
    "topk": dict(noisy=True, load_balance=0.1, z_loss=0.1, switch_balance=0.1),
    "dselect_k": dict(entropy_reg=0.1),
    "hard_concrete": dict(l0_reg=0.1),
    "remoe": dict(z_loss=0.1, switch_balance=0.1),
    "remoe_balanced": dict(l1_balanced=True),
}


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("gate", [*spec.GATE_NAMES, "remoe_balanced"])
def test_an_empty_batch_gives_empty_weights_and_a_zero_regulariser(G, gate, training):
    name = "remoe" if gate == "remoe_balanced" else gate
    g = G.make_gate(name, 5, 2, input_dim=3, **_EMPTY_HPARAMS.get(gate, {}))  # n = 5: DSelect-k's penalty is on
    x = _tensor(G, np.zeros((0, 3)), "float32")
    if name_of(G) == "torch":
        g.train(training)
        q = g(x)
    else:
        q = g(x, training=training)
    assert tuple(q.shape) == (0, 5)
    assert float(g.regularization_loss) == 0.0


def test_an_empty_batch_with_given_hard_concrete_noise(G):
    g = G.make_gate("hard_concrete", 4, 2, input_dim=3, l0_reg=0.1)
    x, u = _tensor(G, np.zeros((0, 3)), "float32"), _tensor(G, np.zeros((0, 4)), "float32")
    q = g(x, noise=u) if name_of(G) == "torch" else g(x, training=True, noise=u)
    assert tuple(q.shape) == (0, 4) and float(g.regularization_loss) == 0.0
