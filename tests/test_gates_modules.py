"""``make_gate`` modules: NumPy reference, PyTorch/TensorFlow parity, parameters, support, training mode."""

from __future__ import annotations

import numpy as np
import pytest

from gates import reference as ref
from gates import spec

from ._fw import assert_close, gate_run, name_of

EXPERTS = [2, 5, 6, 16, 64, 256]
# Regularisers switched on so that their values and gradients are compared too.
HPARAMS = {
    "softmax": {},
    "topk": {"noisy": True, "load_balance": 0.1},
    "dselect_k": {"gamma": 1.5, "entropy_reg": 0.05},
    "hard_concrete": {"l0_reg": 0.01},
    "sigmoid_topk": {"z_loss": 0.01, "switch_balance": 0.1},
    "sparsemax": {"z_loss": 0.01, "switch_balance": 0.1},
    "entmax15": {"z_loss": 0.01, "switch_balance": 0.1},
    "remoe": {"l1_init": 0.05, "z_loss": 0.01, "switch_balance": 0.1},
}


def _setup(name: str, n: int, per_example: bool, rng: np.random.Generator):
    k = min(3, n)
    input_dim = 7 if per_example else None
    config = spec.make_config(name, n, k, input_dim, **HPARAMS[name])
    params = config.init_params(rng)
    # Move parameters away from their tiny initial values so that the comparison is not trivially near 1/n.
    params = {key: v + rng.normal(size=v.shape) * (0.3 if key.startswith("z_") else 0.5) for key, v in params.items()}
    x = rng.normal(size=(5, input_dim)) if per_example else None
    batch_shape = (5, n) if per_example else (n,)
    noise = None
    if name == "topk":
        noise = rng.normal(size=batch_shape)
    elif name == "hard_concrete":
        noise = rng.uniform(0.02, 0.98, size=batch_shape)
    cot = rng.normal(size=batch_shape)
    return config, params, x, noise, cot


def _grads_of_reference(config, params, x, noise, cot, eps=1e-6):
    """Finite-difference gradients of sum(q * cot) + reg of the float64 reference w.r.t. every parameter."""

    def loss(p):
        out = ref.gate_forward(config, p, x, training=True, noise=noise)
        return float((out.weights * cot).sum() + out.regularization)

    grads = {}
    for key, value in params.items():
        g = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            p_hi = {**params, key: value.copy()}
            p_lo = {**params, key: value.copy()}
            p_hi[key][idx] += eps
            p_lo[key][idx] -= eps
            g[idx] = (loss(p_hi) - loss(p_lo)) / (2 * eps)
        grads[key] = g
    return grads


@pytest.mark.parametrize("per_example", [False, True], ids=["static", "per_example"])
@pytest.mark.parametrize("n", EXPERTS)
@pytest.mark.parametrize("name", spec.GATE_NAMES)
def test_module_matches_reference_float64(G, name, n, per_example, rng):
    config, params, x, noise, cot = _setup(name, n, per_example, rng)
    gate = G.make_gate(name, n, config.k, config.input_dim, dtype="float64", **HPARAMS[name])
    gate.set_numpy_params(params)
    for training in (False, True):
        want = ref.gate_forward(config, params, x, training=training, noise=noise)
        got = gate_run(G, gate, x, training=training, noise=noise, cotangent=cot)
        assert_close(f"{name} weights (training={training})", got["weights"], want.weights, atol=1e-10)
        assert got["reg"] == pytest.approx(want.regularization, abs=1e-10)
    if n <= 16:  # finite differences of every parameter: keep them small
        fd = _grads_of_reference(config, params, x, noise, cot)
        for key, want_g in fd.items():
            assert_close(f"{name} d/d {key}", got["grad_" + key], want_g, atol=1e-6, rtol=1e-6)


@pytest.mark.parity
@pytest.mark.parametrize("per_example", [False, True], ids=["static", "per_example"])
@pytest.mark.parametrize("n", EXPERTS)
@pytest.mark.parametrize("name", spec.GATE_NAMES)
def test_torch_and_tf_agree_float32(gt, gf, name, n, per_example, rng):
    config, params, x, noise, cot = _setup(name, n, per_example, rng)
    a = gt.make_gate(name, n, config.k, config.input_dim, **HPARAMS[name])
    b = gf.make_gate(name, n, config.k, config.input_dim, **HPARAMS[name])
    a.set_numpy_params(params)
    b.set_numpy_params(params)
    for training in (False, True):
        ra = gate_run(gt, a, x, training=training, noise=noise, cotangent=cot)
        rb = gate_run(gf, b, x, training=training, noise=noise, cotangent=cot)
        assert set(ra) == set(rb)
        for key in ra:
            if key == "reg":
                assert ra[key] == pytest.approx(rb[key], abs=1e-5, rel=1e-5), f"{name} reg"
            else:
                assert_close(f"{name} {key} (training={training})", ra[key], rb[key], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("per_example", [False, True], ids=["static", "per_example"])
@pytest.mark.parametrize("name", spec.GATE_NAMES)
def test_same_seed_same_initial_parameters(gt, gf, name, per_example):
    input_dim = 9 if per_example else None
    a = gt.make_gate(name, 12, 3, input_dim, seed=7, dtype="float64")
    b = gf.make_gate(name, 12, 3, input_dim, seed=7, dtype="float64")
    pa, pb = a.get_numpy_params(), b.get_numpy_params()
    assert list(pa) == list(pb)
    assert {key: v.shape for key, v in pa.items()} == spec.make_config(name, 12, 3, input_dim).param_shapes()
    for key in pa:
        np.testing.assert_array_equal(pa[key], pb[key])
    c = gt.make_gate(name, 12, 3, input_dim, seed=8, dtype="float64").get_numpy_params()
    assert any(not np.array_equal(pa[key], c[key]) for key in pa if np.any(pa[key]))


def test_dselect_k_initialisation_follows_the_paper():
    cfg = spec.make_config("dselect_k", 64, 4, 16, gamma=2.0)
    p = cfg.init_params(0)
    assert np.abs(p["z_kernel"]).max() <= 2.0 / 100 and np.abs(p["z_bias"]).max() <= 2.0 / 100
    assert np.abs(p["w_kernel"]).max() <= 0.05 and np.abs(p["w_bias"]).max() <= 0.05
    assert p["z_kernel"].std() > 0.005  # not a constant


def test_support_and_training_only_regularisation(G, rng):
    gate = G.make_gate("topk", 8, 3, load_balance=1.0)
    assert gate.support().sum() == 3
    out_eval = gate_run(G, gate, None, training=False)
    out_train = gate_run(G, gate, None, training=True)
    assert out_eval["reg"] == 0.0
    assert out_train["reg"] > 0.0
    x = rng.normal(size=(4, 5))
    pe = G.make_gate("dselect_k", 6, 2, 5)
    assert pe.support(_tensor(G, x)).shape == (4, 6)


def test_hard_concrete_sample_is_reproducible_from_u(G, rng):
    gate = G.make_gate("hard_concrete", 10, 3, dtype="float64")
    u = rng.uniform(0.01, 0.99, size=10)
    first = gate_run(G, gate, None, training=True, noise=u)["weights"]
    second = gate_run(G, gate, None, training=True, noise=u)["weights"]
    np.testing.assert_array_equal(first, second)
    other = gate_run(G, gate, None, training=True, noise=rng.uniform(0.01, 0.99, size=10))["weights"]
    assert not np.array_equal(first, other)
    # Without u, a training call draws its own noise: two calls differ.
    a = gate_run(G, gate, None, training=True)["weights"]
    b = gate_run(G, gate, None, training=True)["weights"]
    assert not np.array_equal(a, b)


def _tensor(G, x):
    if G.__name__.endswith("torch"):
        import torch

        return torch.tensor(x, dtype=torch.float32)
    import tensorflow as tf

    return tf.constant(x, dtype=tf.float32)


def test_noise_check_can_be_skipped_for_checked_noise(G, rng):
    """A given hard-concrete ``u`` is checked (a read of its values); ``check_noise=False`` skips the check, so the
    harness can time the gate without a host sync per call. Both give the same weights for valid noise."""
    gate = G.make_gate("hard_concrete", 6, 2, 4, seed=1)
    x, u = rng.normal(size=(3, 4)), rng.uniform(0.1, 0.9, size=(3, 6))
    bad = u.copy()
    bad[0, 0] = 1.0
    if name_of(G) == "torch":
        import torch

        gate.train()
        xt, ut, bt = (torch.tensor(a, dtype=torch.float32) for a in (x, u, bad))
        call = lambda noise, check: gate(xt, noise=noise, check_noise=check).detach()  # noqa: E731
    else:
        import tensorflow as tf

        xt, ut, bt = (tf.constant(a, dtype=tf.float32) for a in (x, u, bad))
        call = lambda noise, check: gate(xt, training=True, noise=noise, check_noise=check)  # noqa: E731
    with pytest.raises(ValueError, match=r"u: expected values in the open interval \(0, 1\)"):
        call(bt, True)
    np.testing.assert_array_equal(np.asarray(call(ut, False)), np.asarray(call(ut, True)))
