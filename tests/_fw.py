"""Framework-neutral test helpers: NumPy in, NumPy out, gradients of ``sum(output * cotangent)``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def name_of(G) -> str:
    return G.__name__.rsplit(".", 1)[-1]


def dselect_impls(G) -> tuple[str, ...]:
    """DSelect-k implementations of ``G`` that run on CPU tensors here: ``"triton"`` only when its kernels were
    imported in Triton's interpreter (``conftest.load_triton_kernels``, on a machine without CUDA)."""
    import sys

    kernels = sys.modules.get("gates.dselect_triton")
    runs_on_cpu = kernels is not None and kernels.interpreted()
    return tuple(i for i in G.DSELECT_K_IMPLS if i != "triton" or runs_on_cpu)


def value_and_grads(
    G, fn: Callable, inputs: Sequence[np.ndarray], cotangent: np.ndarray | None = None, dtype: str = "float64"
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Run ``fn(*tensors)`` in the framework of ``G``; return its output and the gradients of
    ``sum(output * cotangent)`` with respect to every input (zeros where the output does not depend on it)."""
    if name_of(G) == "torch":
        import torch

        ts = [torch.tensor(np.asarray(a), dtype=getattr(torch, dtype), requires_grad=True) for a in inputs]
        out = fn(*ts)
        if cotangent is None:
            return out.detach().double().numpy(), []
        (out * torch.as_tensor(cotangent, dtype=out.dtype)).sum().backward()
        grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in ts]
        return out.detach().double().numpy(), [g.double().numpy() for g in grads]
    import tensorflow as tf

    ts = [tf.Variable(np.asarray(a), dtype=dtype) for a in inputs]
    with tf.GradientTape() as tape:
        out = fn(*[tf.convert_to_tensor(t) for t in ts])
        loss = tf.reduce_sum(out * tf.cast(cotangent, out.dtype)) if cotangent is not None else None
    if cotangent is None:
        return np.asarray(out.numpy(), dtype=np.float64), []
    grads = tape.gradient(loss, ts, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return np.asarray(out.numpy(), dtype=np.float64), [np.asarray(g.numpy(), dtype=np.float64) for g in grads]


def gate_run(
    G,
    gate,
    x: np.ndarray | None,
    *,
    training: bool,
    noise: np.ndarray | None = None,
    cotangent: np.ndarray | None = None,
    reg_weight: float = 1.0,
) -> dict[str, np.ndarray]:
    """Call a gate module; return its weights, regularisation loss and the gradients of
    ``sum(weights * cotangent) + reg_weight * regularization_loss`` w.r.t. every parameter and ``x``."""
    if name_of(G) == "torch":
        import torch

        gate.train(training)
        gate.zero_grad(set_to_none=True)
        dtype = gate.dtype
        xt = None if x is None else torch.tensor(x, dtype=dtype, requires_grad=True)
        nt = None if noise is None else torch.tensor(noise, dtype=dtype)
        q = gate(xt, noise=nt)
        out = {"weights": q.detach().double().numpy(), "reg": float(gate.regularization_loss.detach())}
        if cotangent is not None:
            loss = (q * torch.as_tensor(cotangent, dtype=dtype)).sum() + reg_weight * gate.regularization_loss
            loss.backward()
            for key, p in gate.named_parameters():
                out["grad_" + key] = (p.grad if p.grad is not None else torch.zeros_like(p)).double().numpy()
            if xt is not None:
                out["grad_x"] = xt.grad.double().numpy()
        return out
    import tensorflow as tf

    dtype = gate.dtype
    xv = None if x is None else tf.Variable(x, dtype=dtype)
    nt = None if noise is None else tf.constant(noise, dtype=dtype)
    with tf.GradientTape() as tape:
        q = gate(None if xv is None else tf.convert_to_tensor(xv), training=training, noise=nt)
        reg = gate.regularization_loss
        loss = None
        if cotangent is not None:
            loss = tf.reduce_sum(q * tf.cast(cotangent, q.dtype)) + reg_weight * reg
    out = {"weights": np.asarray(q.numpy(), dtype=np.float64), "reg": float(reg)}
    if cotangent is not None:
        keys = list(gate.get_numpy_params())
        targets = [gate.param(key) for key in keys] + ([xv] if xv is not None else [])
        # (UnconnectedGradients.ZERO fails on Keras variables, whose dtype is a string: fill zeros here.)
        grads = tape.gradient(loss, targets)
        grads = [np.zeros(t.shape) if g is None else g.numpy() for t, g in zip(targets, grads, strict=True)]
        for key, g in zip(keys, grads, strict=False):
            out["grad_" + key] = np.asarray(g, dtype=np.float64)
        if xv is not None:
            out["grad_x"] = np.asarray(grads[-1], dtype=np.float64)
    return out


def finite_difference(f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of a scalar NumPy function, float64."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        hi = f(x)
        flat[i] = old - eps
        lo = f(x)
        flat[i] = old
        gflat[i] = (hi - lo) / (2 * eps)
    return grad


def assert_close(name: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float = 0.0) -> None:
    """Compare with a message that names the tensor, its shape and the largest difference."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != expected {want.shape}"
    diff = np.abs(got - want)
    bound = atol + rtol * np.abs(want)
    if not np.all(diff <= bound):
        worst = np.unravel_index(np.argmax(diff - bound), diff.shape)
        raise AssertionError(
            f"{name} {got.shape}: max |diff| {diff.max():.3e} at {tuple(int(i) for i in worst)} "
            f"(got {got[worst]:.9g}, want {want[worst]:.9g}; atol {atol:g}, rtol {rtol:g})"
        )
