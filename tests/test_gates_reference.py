"""The NumPy reference's helpers for the accuracy checks: the logits a gate selects from, the stretched gate."""

from __future__ import annotations

import numpy as np
import pytest

from gates import reference as ref
from gates import spec


def _cases_topk_logits(params, x, noise, training, noisy):
    """The formula of ``harness.cases.ambiguous_topk_rows``, written out."""
    if x is not None:
        logits = x @ params["kernel"] + params["bias"]
        noise_l = x @ params["noise_kernel"] if "noise_kernel" in params else None
    else:
        logits = params["logits"][None, :]
        noise_l = params["noise_logits"][None, :] if "noise_logits" in params else None
    if training and noisy and noise is not None and noise_l is not None:
        logits = logits + np.reshape(noise, logits.shape) * np.logaddexp(0.0, noise_l)
    return logits


def _random_params(config, rng):
    return {key: rng.normal(size=shape) for key, shape in config.param_shapes().items()}


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("noisy", [False, True])
@pytest.mark.parametrize("input_dim", [None, 7])
def test_routing_logits_of_topk_match_the_cases_formula(rng, input_dim, noisy, training):
    config = spec.make_config("topk", 6, 2, input_dim, noisy=noisy)
    params = _random_params(config, rng)
    x = rng.normal(size=(5, 7)) if input_dim else None
    noise = rng.standard_normal((5, 6) if input_dim else (6,))
    got = ref.routing_logits(config, params, x, noise, training)
    want = _cases_topk_logits(params, x, noise, training, noisy)
    assert got.shape == ((5, 6) if input_dim else (1, 6))
    np.testing.assert_array_equal(got, want)
    # without noise, training or not: the plain logits
    np.testing.assert_array_equal(
        ref.routing_logits(config, params, x, None, True), _cases_topk_logits(params, x, None, True, noisy)
    )


@pytest.mark.parametrize("gate", ["softmax", "hard_concrete"])
@pytest.mark.parametrize("input_dim", [None, 4])
def test_routing_logits_of_softmax_and_hard_concrete(rng, gate, input_dim):
    config = spec.make_config(gate, 5, 2, input_dim)
    params = _random_params(config, rng)
    x = rng.normal(size=(3, 4)) if input_dim else None
    got = ref.routing_logits(config, params, x, training=True)
    key = "log_alpha" if gate == "hard_concrete" else "logits"
    want = x @ params["kernel"] + params["bias"] if input_dim else params[key][None, :]
    np.testing.assert_array_equal(got, want)


def test_routing_logits_rejects_dselect_k_and_bad_noise(rng):
    with pytest.raises(ValueError, match="config: expected"):
        ref.routing_logits(spec.make_config("dselect_k", 4, 2), {"z_logits": np.zeros((2, 2)), "w_logits": np.zeros(2)})
    config = spec.make_config("topk", 4, 2, noisy=True)
    params = _random_params(config, rng)
    with pytest.raises(ValueError, match="noise: expected"):
        ref.routing_logits(config, params, noise=np.zeros(3), training=True)


@pytest.mark.parametrize("limits", [spec.HARD_CONCRETE_LIMITS, (-0.3, 1.2)])
@pytest.mark.parametrize("beta", [spec.HARD_CONCRETE_BETA, 0.4])
def test_hard_concrete_stretched_matches_the_cases_formula(rng, beta, limits):
    log_alpha = rng.normal(size=(6, 5)) * 2
    u = rng.uniform(1e-6, 1 - 1e-6, size=(6, 5))
    # the formula of harness.cases.near_clip_rows, written out
    s = 1.0 / (1.0 + np.exp(-(np.log(u) - np.log1p(-u) + log_alpha) / beta))
    lo, hi = limits
    want = s * (hi - lo) + lo
    got = ref.hard_concrete_stretched(log_alpha, u, beta, limits)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.clip(got, 0.0, 1.0), ref.hard_concrete_gates(log_alpha, u, beta, limits))
