"""Bad input raises ValueError naming the argument, in both frameworks, before any computation; NaN policy."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from gates import reference as ref
from gates import spec

from ._fw import value_and_grads

BAD_GATES = [
    (dict(name="gumbel_softmax", num_experts=4, k=2), "name"),
    (dict(name="topk", num_experts=1, k=1), "num_experts"),
    (dict(name="topk", num_experts=4.0, k=1), "num_experts"),
    (dict(name="softmax", num_experts=4, k=0), "k"),
    (dict(name="dselect_k", num_experts=4, k=5), "k"),
    (dict(name="dselect_k", num_experts=4, k=2, gamma=0.0), "gamma"),
    (dict(name="dselect_k", num_experts=4, k=2, gamma=-1.0), "gamma"),
    (dict(name="hard_concrete", num_experts=4, k=2, beta=0.0), "beta"),
    (dict(name="hard_concrete", num_experts=4, k=2, limits=(0.0, 1.1)), "limits"),
    (dict(name="hard_concrete", num_experts=4, k=2, limits=(-0.1, 1.0)), "limits"),
    (dict(name="hard_concrete", num_experts=4, k=2, limits=(0.5,)), "limits"),
    (dict(name="topk", num_experts=4, k=2, input_dim=0), "input_dim"),
    (dict(name="topk", num_experts=4, k=2, temperature=2.0), "hparams"),
    (dict(name="topk", num_experts=4, k=2, impl="fused"), "impl"),
    (dict(name="topk", num_experts=4, k=2, dtype="float16"), "dtype"),
]


@pytest.mark.parametrize("kwargs,arg", BAD_GATES, ids=[f"{a}-{i}" for i, (_, a) in enumerate(BAD_GATES)])
def test_make_gate_rejects_bad_arguments(G, kwargs, arg):
    with pytest.raises(ValueError, match=rf"^{arg}: expected") as info:
        G.make_gate(**kwargs)
    assert "got" in str(info.value)


def _functional_cases(G):
    z = np.zeros((2, 3, 2))
    w = np.zeros((2, 3))
    la = np.zeros((2, 4))
    return [
        ("topk k", lambda: G.topk_weights(_t(G, np.zeros((2, 4))), 5), "k"),
        ("dselect z bits", lambda: G.dselect_k_weights(_t(G, np.zeros((2, 3, 3))), _t(G, w), 4), "z_logits"),
        ("dselect w shape", lambda: G.dselect_k_weights(_t(G, z), _t(G, np.zeros((2, 2))), 4), "w_logits"),
        ("dselect rank", lambda: G.dselect_k_weights(_t(G, np.zeros(2)), _t(G, np.zeros(())), 4), "z_logits"),
        ("dselect gamma", lambda: G.dselect_k_weights(_t(G, z), _t(G, w), 4, gamma=0.0), "gamma"),
        ("dselect impl", lambda: G.dselect_k_weights(_t(G, z), _t(G, w), 4, impl="cuda"), "impl"),
        ("u range", lambda: G.hard_concrete_gates(_t(G, la), _t(G, np.full((2, 4), 1.0))), "u"),
        ("u range 0", lambda: G.hard_concrete_gates(_t(G, la), _t(G, np.zeros((2, 4)))), "u"),
        ("u shape", lambda: G.hard_concrete_gates(_t(G, la), _t(G, np.full((2, 3), 0.5))), "u"),
        ("beta", lambda: G.hard_concrete_gates(_t(G, la), beta=-1.0), "beta"),
        ("limits", lambda: G.hard_concrete_gates(_t(G, la), limits=(0.1, 1.1)), "limits"),
    ]


@pytest.mark.parametrize("case", range(11))
def test_functional_api_rejects_bad_arguments(G, case):
    label, call, arg = _functional_cases(G)[case]
    with pytest.raises(ValueError, match=rf"^{arg}: expected"):
        call()


def test_module_rejects_wrong_inputs_and_params(G):
    static = G.make_gate("topk", 4, 2)
    per_ex = G.make_gate("topk", 4, 2, input_dim=3)
    with pytest.raises(ValueError, match=r"^x: expected last dimension 3; got shape \(2, 5\)"):
        per_ex(_t(G, np.zeros((2, 5))))
    with pytest.raises(ValueError, match=r"^x: expected an array of shape \(batch, 3\); got None"):
        per_ex()
    with pytest.raises(ValueError, match=r"^x: a static gate takes no input"):
        static(_t(G, np.zeros((2, 3))))
    with pytest.raises(ValueError, match=r"^params\['kernel'\]: expected shape \(3, 4\); got \(4, 3\)"):
        per_ex.set_numpy_params({"kernel": np.zeros((4, 3)), "bias": np.zeros(4)})
    with pytest.raises(ValueError, match=r"^params: expected exactly the keys"):
        per_ex.set_numpy_params({"kernel": np.zeros((3, 4))})
    with pytest.raises(ValueError, match=r"^params\['bias'\]: expected finite values"):
        per_ex.set_numpy_params({"kernel": np.zeros((3, 4)), "bias": np.array([0, np.nan, 0, 0])})


@pytest.mark.parametrize("gate", spec.GATE_NAMES)
def test_nan_in_a_row_gives_a_nan_row_and_leaves_other_rows_exact(G, gate, rng):
    """Policy: gates do not scan tensors for non-finite values (that would force a device sync on every call).
    NaN propagates to the whole row it appears in; other rows are unaffected."""
    n, k = 8, 3
    if gate == "dselect_k":
        z, w = rng.uniform(-0.4, 0.4, size=(3, k, 3)), rng.normal(size=(3, k))
        z[1, 0, 2] = np.nan
        got, _ = value_and_grads(G, lambda a, b: G.dselect_k_weights(a, b, n), [z, w])
        want = ref.dselect_k_weights(z[[0, 2]], w[[0, 2]], n)
    else:
        logits = rng.normal(size=(3, n))
        logits[1, 4] = np.nan
        fn = {
            "softmax": G.softmax_weights,
            "topk": lambda t: G.topk_weights(t, k),
            "hard_concrete": lambda t: G.hard_concrete_weights(G.hard_concrete_gates(t)),
            "sigmoid_topk": lambda t: G.sigmoid_topk_weights(t, k),
            "sparsemax": G.sparsemax_weights,
            "entmax15": G.entmax15_weights,
            "remoe": G.relu_weights,
        }[gate]
        got, _ = value_and_grads(G, fn, [logits])
        ref_fn = {
            "softmax": ref.softmax_weights,
            "topk": lambda a: ref.topk_weights(a, k),
            "hard_concrete": lambda a: ref.hard_concrete_weights(ref.hard_concrete_gates(a)),
            "sigmoid_topk": lambda a: ref.sigmoid_topk_weights(a, k),
            "sparsemax": ref.sparsemax_weights,
            "entmax15": ref.entmax15_weights,
            "remoe": ref.relu_weights,
        }[gate]
        want = ref_fn(logits[[0, 2]])
    assert np.isnan(got[1]).all()
    np.testing.assert_allclose(got[[0, 2]], want, atol=1e-12)


def test_importing_the_packages_loads_no_framework():
    code = (
        "import sys, gates, gates.spec, gates.reference, gates.recipe, harness, harness.results, gatebench.cli; "
        "import reports; "
        "bad = sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules); "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"frameworks imported: {out.stdout.strip()} {out.stderr[-2000:]}"


def _t(G, a):
    if G.__name__.endswith("torch"):
        import torch

        return torch.as_tensor(np.asarray(a, dtype=np.float64))
    import tensorflow as tf

    return tf.constant(np.asarray(a, dtype=np.float64))
