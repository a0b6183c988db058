"""Accuracy of a timing case: its weights against ``gates.reference`` (NumPy float64), its gradients against float64
autograd of the same framework and both against finite differences of the reference. Framework free.

``check(case, probe)`` is the whole check; a framework adapter supplies the ``Probe`` (the timed calls run on the
case's own inputs, in NumPy terms). The pieces:

* ``evaluate_accuracy``: weights within ``TOLERANCES[dtype][0]`` (absolute), gradients within
  ``TOLERANCES[dtype][1]`` relative to ``max(1, max |g_ref|)`` (``compare_grads``).
* ``finite_difference_error`` / ``add_finite_difference_check``: the float64 gradients against central finite
  differences of the reference loss, within ``FD_TOLERANCE``.
* Kinks and ties, left out of the comparisons: ``ambiguous_topk_rows`` (Top-k and sigmoid_topk rows whose k-th and
  (k+1)-th selection scores the dtype cannot separate, ``TOPK_GAP``), ``near_clip_rows`` (hard-concrete rows at a clip
  limit, ``CLIP_MARGIN``), ``kink_rows`` (sparsemax rows with a logit at the threshold, ReMoE rows with a logit at 0,
  ``TOPK_GAP``), and ``check_c``, the loss weights with those rows zeroed. The logits and the stretched gate come
  from ``gates.reference.routing_logits`` and ``gates.reference.hard_concrete_stretched``.

``gate_params`` are a gate's weights (NumPy, by parameter name); a case's columns are ``case.params()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from gates import reference
from harness.cases import CHECK_ROWS, SEED_NOISE, Case, CaseInputs, cast_like

__all__ = [
    "TOLERANCES", "TOPK_GAP", "CLIP_MARGIN", "FD_TOLERANCE", "CHECK_ROWS", "Probe", "check", "evaluate_accuracy",
    "compare_grads", "finite_difference_error", "add_finite_difference_check", "ambiguous_topk_rows",
    "near_clip_rows", "kink_rows", "check_c",
]

# (weights absolute tolerance, gradient tolerance relative to max(1, max |g_ref|)) by dtype.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-9, 1e-8),
    "float32": (2e-4, 2e-3),
    "bfloat16": (6e-2, 1e-1),
}
# Top-k rows whose k-th and (k+1)-th logits are closer than this (relative) are ambiguous at the dtype's precision.
TOPK_GAP: dict[str, float] = {"float64": 1e-9, "float32": 1e-4, "bfloat16": 3e-2}
# Hard-concrete rows with a stretched gate this close to a clip limit (0 or 1) sit on a kink of the loss.
CLIP_MARGIN = 1e-4
# Float64 gradients against finite differences of gates.reference: relative tolerance.
FD_TOLERANCE = 1e-5


class Probe(Protocol):
    """What ``check`` asks of a built case, in NumPy float64 terms (a framework adapter implements it)."""

    def used_inputs(self) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray | None, np.ndarray]:
        """``(gate_params, x, noise, c)`` as the gate holds them (rounded to its dtype): its weights, its input (None
        for a static gate), its training noise (None in eval mode or without noise) and the check's loss weights
        (``check_c``)."""

    def eval_weights(self) -> np.ndarray:
        """Test-time weights from the timed forward (eager or compiled)."""

    def train_weights_and_grads(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Training weights and the gradients of ``sum(q * c) + regularization`` (``c`` of ``used_inputs``) by the
        timed loss, w.r.t. every parameter (by name) and ``"x"`` for a per-example gate."""

    def grads64(self, gate_params: Mapping[str, np.ndarray], x: np.ndarray | None, noise: np.ndarray | None,
                c: np.ndarray) -> dict[str, np.ndarray]:
        """The same gradients by float64 autograd of the framework, on these values (DSelect-k through its
        ``bitwise`` build, not the path being checked)."""


def check(case: Case, probe: Probe) -> dict[str, Any]:
    """The accuracy columns of ``case`` and ``ok`` (see ``evaluate_accuracy`` and ``add_finite_difference_check``).

    ``fwd``: test-time weights only. Backward modes: training weights, gradients on the full batch against float64
    autograd, and the float64 gradients against finite differences of ``gates.reference`` (on the first
    ``CHECK_ROWS`` rows for larger batches, whose float64 gradients are recomputed on those rows).
    """
    gate_params, x, noise, c = probe.used_inputs()
    if not case.training:
        return evaluate_accuracy(case, gate_params, x, None, probe.eval_weights())
    weights, grads = probe.train_weights_and_grads()
    grads_ref = probe.grads64(gate_params, x, noise, c)
    out = evaluate_accuracy(case, gate_params, x, noise, weights, grads, grads_ref)
    if case.per_example and case.batch > CHECK_ROWS:  # finite differences on a sub-batch
        rows = slice(0, CHECK_ROWS)
        x, c = x[rows], c[rows]
        noise = None if noise is None else noise[rows]
        grads_ref = probe.grads64(gate_params, x, noise, c)
    return add_finite_difference_check(out, case, gate_params, x, noise, c, grads_ref)


def compare_grads(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> tuple[float, str]:
    """Largest gradient error relative to ``max(1, max |want|)`` over tensors, and the tensor that has it."""
    worst, where = 0.0, ""
    for name, ref in want.items():
        if name not in got:
            raise ValueError(f"gradients: {name!r} missing from the measured gradients ({sorted(got)})")
        g = np.asarray(got[name], dtype=np.float64)
        if g.shape != ref.shape:
            raise ValueError(f"gradients: {name!r} has shape {g.shape}; expected {ref.shape}")
        err = float(np.max(np.abs(g - ref), initial=0.0) / max(1.0, float(np.max(np.abs(ref), initial=0.0))))
        if not np.isfinite(err):
            err = float("inf")
        if err > worst or not where:
            worst, where = err, name
    return worst, where


def _weights_error(case: Case, gate_params: Mapping[str, np.ndarray], x: np.ndarray | None,
                   noise: np.ndarray | None, weights: np.ndarray) -> dict[str, Any]:
    """``max_abs_err`` of the weights against ``gates.reference`` (ambiguous Top-k rows left out), ``ambiguous_rows``
    and, for a shape mismatch, ``error``. Per-example weights are compared on their first ``CHECK_ROWS`` rows."""
    if case.per_example:  # rows are independent: the reference sees the first CHECK_ROWS of them
        x, weights = x[:CHECK_ROWS], np.asarray(weights)[:CHECK_ROWS]
        noise = None if noise is None else noise[:CHECK_ROWS]
    want = reference.gate_forward(case.config(), dict(gate_params), x, training=case.training,
                                  noise=noise if case.training else None).weights
    got = np.asarray(weights, dtype=np.float64)
    if got.shape != want.shape:
        return {"max_abs_err": None, "ambiguous_rows": 0,
                "error": f"accuracy: weights have shape {got.shape}; expected {want.shape}"}
    amb = ambiguous_topk_rows(case, gate_params, x, noise, training=case.training)
    if case.per_example:
        diff = np.abs(got - want)[~amb]
    else:
        diff = np.abs(got - want) if not amb.any() else np.zeros(0)
    max_abs = float(np.max(diff, initial=0.0)) if np.all(np.isfinite(diff)) else float("inf")
    return {"max_abs_err": max_abs, "ambiguous_rows": int(amb.sum())}


def evaluate_accuracy(case: Case, gate_params: Mapping[str, np.ndarray], x: np.ndarray | None,
                      noise: np.ndarray | None, weights: np.ndarray, grads: Mapping[str, np.ndarray] | None = None,
                      grads_ref: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Compare a case's ``weights`` with ``gates.reference`` and its gradients with float64 ones.

    The weights are test-time ones for ``fwd`` cases, training ones (with ``noise``) for backward modes.
    Per-example weights are compared on their first ``CHECK_ROWS`` rows (rows are independent; the NumPy
    reference of DSelect-k builds a ``(b, k, n, m)`` tensor, too big at router scale); gradients on all of them.
    ``gate_params``, ``x`` and ``noise`` are the values the gate actually used (already rounded to its dtype), so the
    only difference left is the arithmetic. Returns ``max_abs_err`` (weights, ambiguous Top-k rows left out),
    ``max_grad_err`` (relative, see ``compare_grads``; None without gradients), ``ambiguous_rows``, ``ok`` and,
    when not ok, ``error`` (what failed, by how much, against which tolerance).
    """
    w_tol, g_tol = TOLERANCES[case.dtype]
    weights_out = _weights_error(case, gate_params, x, noise, weights)
    if "error" in weights_out:
        return {"ok": False, "max_grad_err": None, **weights_out}
    max_abs = weights_out["max_abs_err"]
    out: dict[str, Any] = {"max_grad_err": None, **weights_out}
    errors = []
    if not max_abs <= w_tol:
        errors.append(f"accuracy: weights differ from gates.reference by {max_abs:.3g} (tolerance {w_tol:g})")
    if grads is not None and grads_ref is not None:
        g_err, where = compare_grads(grads, grads_ref)
        out["max_grad_err"] = g_err
        if not g_err <= g_tol:
            errors.append(
                f"accuracy: gradient of {where!r} differs from float64 autograd by {g_err:.3g} relative "
                f"(tolerance {g_tol:g})"
            )
    out["ok"] = not errors
    if errors:
        out["error"] = "; ".join(errors)
    return out


def finite_difference_error(case: Case, gate_params: Mapping[str, np.ndarray], x: np.ndarray | None,
                            noise: np.ndarray | None, c: np.ndarray, grads64: Mapping[str, np.ndarray],
                            eps: float = 1e-6, directions: int = 2) -> float:
    """Check float64 framework gradients against central finite differences of ``gates.reference``.

    For seeded random directions ``v`` over the parameters (and ``x``), compares ``<grad, v>`` with
    ``(L(theta + eps v) - L(theta - eps v)) / (2 eps)`` where ``L = sum(q * c) + regularization`` is computed by
    the NumPy reference in training mode with the same noise. This makes the gradient check independent of the
    framework's own code. Returns the largest ``|<grad, v> - fd| / max(1, |fd|)``.
    """
    config = case.config()
    names = sorted(grads64)

    def loss(values: Mapping[str, np.ndarray]) -> float:
        p = {key: values[key] for key in gate_params}
        out = reference.gate_forward(config, p, values.get("x"), training=True, noise=noise)
        return float(np.sum(out.weights * c) + out.regularization)

    base = {key: np.asarray(v, dtype=np.float64) for key, v in gate_params.items()}
    if x is not None:
        base["x"] = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(SEED_NOISE + 1)
    worst = 0.0
    for _ in range(directions):
        v = {key: rng.standard_normal(base[key].shape) for key in names}
        plus = {key: base[key] + eps * v[key] if key in v else base[key] for key in base}
        minus = {key: base[key] - eps * v[key] if key in v else base[key] for key in base}
        fd = (loss(plus) - loss(minus)) / (2 * eps)
        dd = float(sum(np.sum(np.asarray(grads64[key]) * v[key]) for key in names))
        worst = max(worst, abs(dd - fd) / max(1.0, abs(fd)))
    return worst


def add_finite_difference_check(result: dict[str, Any], case: Case, gate_params: Mapping[str, np.ndarray],
                                x: np.ndarray | None, noise: np.ndarray | None, c: np.ndarray,
                                grads64: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """``result`` of ``evaluate_accuracy`` plus ``fd_grad_err`` (see ``finite_difference_error``) and its verdict."""
    err = finite_difference_error(case, gate_params, x, noise, c, grads64)
    result["fd_grad_err"] = err
    if not err <= FD_TOLERANCE:
        msg = (f"accuracy: float64 gradient differs from finite differences of gates.reference by {err:.3g} "
               f"relative (tolerance {FD_TOLERANCE:g})")
        result["error"] = f"{result['error']}; {msg}" if result.get("error") else msg
        result["ok"] = False
    return result


def _no_rows(case: Case, x: np.ndarray | None) -> np.ndarray:
    return np.zeros(len(x) if case.per_example else 1, dtype=bool)


def ambiguous_topk_rows(case: Case, gate_params: Mapping[str, np.ndarray], x: np.ndarray | None,
                        noise: np.ndarray | None, training: bool) -> np.ndarray:
    """Rows of a Top-k case whose k-th and (k+1)-th float64 logits are closer than the dtype can separate.

    Their selected experts can legitimately differ between a float32 gate and the float64 reference, so the
    accuracy check leaves them out (and says how many). Bool ``(batch,)`` or ``(1,)`` for a static gate.
    """
    k = case.k
    if case.gate not in ("topk", "sigmoid_topk") or k == case.experts:
        return _no_rows(case, x)
    config = case.config()
    logits = reference.routing_logits(config, gate_params, x, noise=noise, training=training)
    if case.gate == "sigmoid_topk":  # selection on sigmoid scores plus the (initial) expert bias
        logits = 1.0 / (1.0 + np.exp(-logits)) + config.init_state()["expert_bias"]
    top = -np.sort(-logits, axis=-1)
    gap = top[:, k - 1] - top[:, k]
    scale = 1.0 + np.abs(top[:, k - 1])
    return gap < TOPK_GAP[case.dtype] * scale


def near_clip_rows(case: Case, gate_params: Mapping[str, np.ndarray], x: np.ndarray | None,
                   noise: np.ndarray | None) -> np.ndarray:
    """Rows of a hard-concrete training case with a stretched gate within ``CLIP_MARGIN`` of 0 or 1.

    The clip is not differentiable there: a finite difference straddles the kink, and float32 and float64 may land
    on different sides. The gradient checks leave those rows out (bool ``(batch,)``, or ``(1,)`` static).
    """
    if case.gate != "hard_concrete" or noise is None:
        return _no_rows(case, x)
    config = case.config()
    log_alpha = reference.routing_logits(config, gate_params, x)
    u = np.reshape(noise, log_alpha.shape)
    stretched = reference.hard_concrete_stretched(log_alpha, u, config.hparams["beta"], config.hparams["limits"])
    near = (np.abs(stretched) < CLIP_MARGIN) | (np.abs(stretched - 1.0) < CLIP_MARGIN)
    return near.any(axis=-1)


def kink_rows(case: Case, gate_params: Mapping[str, np.ndarray], x: np.ndarray | None) -> np.ndarray:
    """Rows of a sparsemax case with a logit within ``TOPK_GAP`` (relative) of the threshold ``tau`` (the support
    boundary, where the map is piecewise linear), or of a ReMoE case with a logit within it of 0 (ReLU's kink).

    A gradient there depends on which side the dtype rounds to, and a finite difference straddles it. Bool
    ``(batch,)``, or ``(1,)`` static. 1.5-entmax is C^1 at its support boundary: no kink."""
    if case.gate not in ("sparsemax", "remoe"):
        return _no_rows(case, x)
    logits = reference.routing_logits(case.config(), gate_params, x)
    if case.gate == "sparsemax":
        q = reference.sparsemax_weights(logits)
        top = logits.max(axis=-1, keepdims=True)
        at = logits - (top - q.max(axis=-1, keepdims=True))  # z - tau
    else:
        at = logits
    return (np.abs(at) < TOPK_GAP[case.dtype] * (1.0 + np.abs(logits))).any(axis=-1)


def check_c(case: Case, inputs: CaseInputs) -> np.ndarray:
    """The loss weights ``c`` of the gradient check: ``inputs.c`` with the rows on a kink of the loss zeroed
    (ambiguous Top-k and sigmoid_topk rows, hard-concrete rows at a clip limit, sparsemax and ReMoE rows at their
    kinks; for a static gate, all of ``c``)."""
    if case.gate not in ("topk", "sigmoid_topk", "hard_concrete", "sparsemax", "remoe"):
        return inputs.c.copy()
    gate_params = {key: cast_like(v, case.dtype) for key, v in inputs.gate_params.items()}
    x = cast_like(inputs.x, case.dtype)
    if case.gate in ("topk", "sigmoid_topk"):
        amb = ambiguous_topk_rows(case, gate_params, x, inputs.noise, training=True)
    elif case.gate == "hard_concrete":
        amb = near_clip_rows(case, gate_params, x, inputs.noise)
    else:
        amb = kink_rows(case, gate_params, x)
    c = inputs.c.copy()
    if case.per_example:
        c[amb] = 0.0
    elif amb.any():
        c[:] = 0.0
    return c
