"""The gate recipe: one functional surface in both frameworks, the regulariser reduction, the entropy schedule."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from gates import reference as ref
from gates import spec

from ._fw import assert_close, gate_run, name_of


def _signature(fn) -> list[tuple[str, inspect._ParameterKind, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_functional_forms_have_the_same_names_and_signatures(gt, gf):
    """``gates.torch`` and ``gates.tf`` export the same names; each function takes the same parameters (names,
    kinds, defaults); ``make_gate`` differs only by PyTorch's ``device``."""
    assert gt.__all__ == gf.__all__
    functions = [name for name in gt.__all__ if inspect.isfunction(getattr(gt, name)) and name != "make_gate"]
    assert "dselect_k_weights" in functions and "load_balance_cv2" in functions
    for name in functions:
        assert _signature(getattr(gt, name)) == _signature(getattr(gf, name)), name
    torch_make = [p for p in _signature(gt.make_gate) if p[0] != "device"]
    assert torch_make == _signature(gf.make_gate)
    assert gt.OPS._fields == gf.OPS._fields
    # the oracle has the same functional forms, without impl= and check_u=
    for name in functions:
        want = [p for p in _signature(getattr(gt, name)) if p[0] not in ("impl", "check_u")]
        assert _signature(getattr(ref, name)) == want, name


HPARAMS = {"dselect_k": {"entropy_reg": 0.05, "gamma": 1.5}, "hard_concrete": {"l0_reg": 0.01}}


def _setup(name: str, n: int, per_example: bool, rng: np.random.Generator, **hparams):
    config = spec.make_config(name, n, 3, 7 if per_example else None, **{**HPARAMS[name], **hparams})
    params = config.init_params(rng)
    params = {key: v + rng.normal(size=v.shape) * (0.3 if key.startswith("z_") else 0.5) for key, v in params.items()}
    x = rng.normal(size=(5, 7)) if per_example else None
    noise = rng.uniform(0.02, 0.98, size=(5, n) if per_example else (n,)) if name == "hard_concrete" else None
    return config, params, x, noise


@pytest.mark.parametrize("per_example", [False, True], ids=["static", "per_example"])
@pytest.mark.parametrize("n", [6, 16])
@pytest.mark.parametrize("name", ["dselect_k", "hard_concrete"])
def test_regularizer_reduction_sum_matches_reference(G, name, n, per_example, rng):
    """``regularizer_reduction="sum"`` (the reference layer's): the batch sum, ``b`` times the default mean."""
    config, params, x, noise = _setup(name, n, per_example, rng, regularizer_reduction="sum")
    mean_config = spec.make_config(name, n, 3, config.input_dim, **HPARAMS[name])
    gate = G.make_gate(name, n, 3, config.input_dim, dtype="float64", **config.hparams)
    gate.set_numpy_params(params)
    want = ref.gate_forward(config, params, x, training=True, noise=noise)
    mean = ref.gate_forward(mean_config, params, x, training=True, noise=noise)
    assert want.regularization == pytest.approx((5 if per_example else 1) * mean.regularization, rel=1e-12)
    assert want.regularization > 0
    got = gate_run(G, gate, x, training=True, noise=noise, cotangent=np.ones((5, n) if per_example else (n,)))
    assert_close(f"{name} weights", got["weights"], want.weights, atol=1e-10)
    assert got["reg"] == pytest.approx(want.regularization, rel=1e-10, abs=1e-12)


def _schedule(calls):
    """A ramp written with arithmetic only, so that it takes a Python int and a TensorFlow tensor alike."""
    return 0.01 * calls + 0.002


@pytest.mark.parametrize("per_example", [False, True], ids=["static", "per_example"])
def test_entropy_schedule_matches_reference(G, per_example, rng):
    """The entropy weight is ``entropy_schedule(calls)`` at the gate's ``calls``-th training call (from 1, as the
    reference layer's ``EntropyRegularizer`` counts); evaluation calls do not count."""
    config, params, x, _ = _setup("dselect_k", 6, per_example, rng, entropy_reg=0.0, entropy_schedule=_schedule)
    gate = G.make_gate("dselect_k", 6, 3, config.input_dim, dtype="float64", **config.hparams)
    gate.set_numpy_params(params)
    cot = np.ones((5, 6) if per_example else (6,))
    for calls in (1, 2, 3):
        gate_run(G, gate, x, training=False)
        want = ref.gate_forward(config, params, x, training=True, calls=calls)
        got = gate_run(G, gate, x, training=True, cotangent=cot)
        assert got["reg"] == pytest.approx(want.regularization, rel=1e-10), f"call {calls}"
    counted = gate.training_calls if name_of(G) == "torch" else int(gate.training_calls.numpy())
    assert counted == 3
    no_entropy = spec.make_config("dselect_k", 6, 3, config.input_dim, gamma=1.5)
    unreachable_only = ref.gate_forward(no_entropy, params, x, training=True).regularization
    assert want.regularization > unreachable_only


def test_entropy_schedule_reads_the_count_inside_a_tf_function(gf, rng):
    """A traced Keras call reads the current count, not the one at trace time."""
    import tensorflow as tf

    config, params, _, _ = _setup("dselect_k", 8, False, rng, entropy_reg=0.0, entropy_schedule=_schedule)
    gate = gf.make_gate("dselect_k", 8, 3, dtype="float64", **config.hparams)
    gate.set_numpy_params(params)

    @tf.function
    def step():
        gate(training=True)
        return gate.regularization_loss

    for calls in (1, 2, 3):
        want = ref.gate_forward(config, params, training=True, calls=calls).regularization
        assert float(step()) == pytest.approx(want, rel=1e-10)


def test_oracle_needs_the_count_for_a_schedule():
    config = spec.make_config("dselect_k", 4, 2, entropy_schedule=_schedule)
    params = config.init_params(0)
    with pytest.raises(ValueError, match="calls: expected"):
        ref.gate_forward(config, params, training=True)
    assert ref.gate_forward(config, params, training=False).regularization == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="dselect_k", regularizer_reduction="max"), "regularizer_reduction: expected one of mean, sum"),
        (dict(name="hard_concrete", regularizer_reduction=None), "regularizer_reduction: expected one of mean, sum"),
        (dict(name="topk", regularizer_reduction="sum"), "hparams: expected only"),
        (dict(name="dselect_k", entropy_schedule=0.1), "entropy_schedule: expected None or a callable"),
        (dict(name="dselect_k", entropy_schedule=_schedule, entropy_reg=0.1), "entropy_reg: expected 0"),
        (dict(name="hard_concrete", entropy_schedule=_schedule), "hparams: expected only"),
    ],
)
def test_new_hyper_parameters_are_checked(kwargs, match):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=match):
        spec.make_config(name, 4, 2, **kwargs)


def test_a_negative_scheduled_weight_is_rejected(gt):
    gate = gt.make_gate("dselect_k", 4, 2, entropy_schedule=lambda calls: -1.0)
    with pytest.raises(ValueError, match=r"entropy_schedule\(calls\): expected a finite number >= 0"):
        gate()
