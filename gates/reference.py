"""NumPy float64 reference of every gate: the oracle that both frameworks are tested against.

Written for clarity, not speed: DSelect-k here uses the paper's formulation with the explicit code matrix
(``where(codes, s, 1 - s).prod(-1)``), which the framework implementations avoid. Same names and signatures as
``gates.torch`` and ``gates.tf``, NumPy arrays in and out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from . import spec


def softmax_weights(logits: np.ndarray) -> np.ndarray:
    """``(..., n) -> (..., n)``: ``softmax(l)``."""
    logits = np.asarray(logits, dtype=np.float64)
    spec.check_min_rank("logits", logits.shape, 1, "(..., n)")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def topk_mask(logits: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` largest logits per row; ties go to the lower expert index."""
    logits = np.asarray(logits, dtype=np.float64)
    spec.check_min_rank("logits", logits.shape, 1, "(..., n)")
    spec.check_k(k, logits.shape[-1])
    order = np.argsort(-logits, axis=-1, kind="stable")[..., :k]
    mask = np.zeros(logits.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=-1)
    return mask


def topk_weights(logits: np.ndarray, k: int) -> np.ndarray:
    """``(..., n) -> (..., n)``: softmax over the ``k`` largest logits, exactly 0 elsewhere."""
    logits = np.asarray(logits, dtype=np.float64)
    mask = topk_mask(logits, k)
    masked = np.where(mask, logits, -np.inf)
    return softmax_weights(masked)


def smooth_step(t: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """Cubic smooth-step: 0 below ``-gamma/2``, 1 above ``gamma/2``, C^1 in between."""
    t = np.asarray(t, dtype=np.float64)
    poly = -2.0 * t**3 / gamma**3 + 3.0 * t / (2.0 * gamma) + 0.5
    return np.where(t <= -gamma / 2, 0.0, np.where(t >= gamma / 2, 1.0, poly))


def dselect_k_selectors(z_logits: np.ndarray, num_experts: int, gamma: float = 1.0) -> np.ndarray:
    """``z_logits (..., k, m) -> r (..., k, n)``: ``r_i = prod_j (s_j if bit_j(i) else 1 - s_j)``."""
    num_experts = spec.check_num_experts(num_experts)
    gamma = spec.check_positive("gamma", gamma)
    z = np.asarray(z_logits, dtype=np.float64)
    spec.check_min_rank("z_logits", z.shape, 2, "(..., k, m)")
    spec.check_last_dim("z_logits", z.shape, spec.num_code_bits(num_experts))
    s = smooth_step(z, gamma)[..., None, :]  # (..., k, 1, m)
    codes = spec.binary_codes(num_experts).astype(bool)  # (n, m)
    return np.where(codes, s, 1.0 - s).prod(axis=-1)  # (..., k, n)


def dselect_k_weights(z_logits: np.ndarray, w_logits: np.ndarray, num_experts: int, gamma: float = 1.0) -> np.ndarray:
    """``z_logits (..., k, m)``, ``w_logits (..., k) -> q (..., n)``: ``q = sum_i softmax(w)_i r(z_i)``."""
    w = np.asarray(w_logits, dtype=np.float64)
    z = np.asarray(z_logits, dtype=np.float64)
    spec.check_min_rank("z_logits", z.shape, 2, "(..., k, m)")
    spec.check_same_shape("w_logits", w.shape, z.shape[:-1], "z_logits without its last axis")
    r = dselect_k_selectors(z, num_experts, gamma)
    alpha = softmax_weights(w)
    return np.einsum("...k,...kn->...n", alpha, r)


def dselect_k_entropy(z_logits: np.ndarray, num_experts: int, gamma: float = 1.0) -> np.ndarray:
    """Sum over selectors of ``H(r) = -sum_e r_e log(r_e + 1e-6)``: ``(..., k, m) -> (...)``."""
    r = dselect_k_selectors(z_logits, num_experts, gamma)
    return -(r * np.log(r + spec.ENTROPY_EPS)).sum(axis=(-2, -1))


def dselect_k_unreachable_penalty(z_logits: np.ndarray, num_experts: int, gamma: float = 1.0) -> np.ndarray:
    """Sum over selectors of ``1 / sum_{e<n} r_e`` (the reference's term for ``n`` not a power of 2)."""
    r = dselect_k_selectors(z_logits, num_experts, gamma)
    return (1.0 / r.sum(axis=-1)).sum(axis=-1)


def hard_concrete_gates(
    log_alpha: np.ndarray,
    u: np.ndarray | None = None,
    beta: float = spec.HARD_CONCRETE_BETA,
    limits: tuple[float, float] = spec.HARD_CONCRETE_LIMITS,
) -> np.ndarray:
    """``(..., n) -> (..., n)`` in ``[0, 1]``: the stretched, clipped hard-concrete gate.

    ``u=None``: test-time ``clip(sigmoid(log_alpha) (zeta - gamma) + gamma, 0, 1)``. Otherwise ``u`` (same shape,
    values in (0, 1)) is the uniform noise of a training sample: ``s = sigmoid((log u - log(1-u) + log_alpha) / beta)``.
    """
    beta = spec.check_positive("beta", beta)
    lo, hi = spec.check_limits(limits)
    la = np.asarray(log_alpha, dtype=np.float64)
    spec.check_min_rank("log_alpha", la.shape, 1, "(..., n)")
    if u is None:
        s = 1.0 / (1.0 + np.exp(-la))
    else:
        u = np.asarray(u, dtype=np.float64)
        spec.check_same_shape("u", u.shape, la.shape, "log_alpha")
        spec.check_unit_interval_open("u", float(u.min()), float(u.max()))
        s = 1.0 / (1.0 + np.exp(-(np.log(u) - np.log1p(-u) + la) / beta))
    return np.clip(s * (hi - lo) + lo, 0.0, 1.0)


def hard_concrete_stretched(
    log_alpha: np.ndarray,
    u: np.ndarray,
    beta: float = spec.HARD_CONCRETE_BETA,
    limits: tuple[float, float] = spec.HARD_CONCRETE_LIMITS,
) -> np.ndarray:
    """The stretched training gate before the clip: ``sigmoid((log u - log(1-u) + log_alpha) / beta) (zeta - gamma)
    + gamma``, float64, shape of ``log_alpha``. ``hard_concrete_gates(log_alpha, u)`` is its clip to ``[0, 1]``;
    where it is near 0 or 1 the clip has a kink."""
    beta = spec.check_positive("beta", beta)
    lo, hi = spec.check_limits(limits)
    la = np.asarray(log_alpha, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    spec.check_same_shape("u", u.shape, la.shape, "log_alpha")
    s = 1.0 / (1.0 + np.exp(-(np.log(u) - np.log1p(-u) + la) / beta))
    return s * (hi - lo) + lo


def hard_concrete_weights(gates: np.ndarray) -> np.ndarray:
    """``q = z / sum(z)``; an all-zero row stays all-zero."""
    total = gates.sum(axis=-1, keepdims=True)
    return gates / np.where(total == 0, 1.0, total)


def hard_concrete_l0(
    log_alpha: np.ndarray,
    beta: float = spec.HARD_CONCRETE_BETA,
    limits: tuple[float, float] = spec.HARD_CONCRETE_LIMITS,
) -> np.ndarray:
    """Expected number of non-zero gates: ``sum_e sigmoid(log_alpha_e - beta log(-gamma/zeta))``."""
    lo, hi = spec.check_limits(limits)
    la = np.asarray(log_alpha, dtype=np.float64)
    shift = beta * np.log(-lo / hi)
    return (1.0 / (1.0 + np.exp(-(la - shift)))).sum(axis=-1)


def load_balance_cv2(weights: np.ndarray) -> float:
    """CV^2 of per-expert importance (sum of weights over the batch): ``var / (mean^2 + 1e-10)``, ddof=0."""
    imp = np.asarray(weights, dtype=np.float64).reshape(-1, np.shape(weights)[-1]).sum(axis=0)
    return float(imp.var() / (imp.mean() ** 2 + spec.CV_EPS))


# --------------------------------------------------------------------------------------------------------------
# A whole gate (parameters + optional routing input), as the framework modules compute it.
# --------------------------------------------------------------------------------------------------------------
class GateOutput(NamedTuple):
    weights: np.ndarray  # (n,) static or (b, n) per-example
    regularization: float  # the training-mode loss (0 in eval mode)


def gate_forward(
    config: spec.GateConfig,
    params: Mapping[str, np.ndarray],
    x: np.ndarray | None = None,
    *,
    training: bool = False,
    noise: np.ndarray | None = None,
    calls: int | None = None,
) -> GateOutput:
    """Reference forward of a gate built by ``make_gate``: same parameters, same regularisers, float64.

    ``noise`` is Top-k's standard normal ``eps`` (noisy gates in training) or hard concrete's uniform ``u``
    (training). Per-example regularisers are batch means, or batch sums with ``regularizer_reduction="sum"``.
    ``calls``: the 1-based count of training calls, which a DSelect-k ``entropy_schedule`` turns into the entropy
    weight (``entropy_schedule(calls)`` in place of ``entropy_reg``).
    """
    p = config.check_params(params)
    h = config.hparams
    n, k = config.num_experts, config.k
    config.check_input(None if x is None else np.shape(x))

    def affine(kernel: str, bias: str | None) -> np.ndarray:
        out = np.asarray(x, dtype=np.float64) @ p[kernel]
        return out + p[bias] if bias else out

    def batch_mean(v: np.ndarray) -> float:  # a per-example regulariser (or a static gate's number) reduced
        return float(np.sum(v)) if h.get("regularizer_reduction") == "sum" else float(np.mean(v))

    reg = 0.0
    if config.name == "dselect_k":
        if config.per_example:
            z, w = affine("z_kernel", "z_bias").reshape(-1, k, config.num_bits), affine("w_kernel", "w_bias")
        else:
            z, w = p["z_logits"], p["w_logits"]
        q = dselect_k_weights(z, w, n, h["gamma"])
        return GateOutput(q, _dselect_k_regularization(config, z, calls, batch_mean) if training else 0.0)

    logits = affine("kernel", "bias") if config.per_example else None
    if config.name == "hard_concrete":
        la = logits if config.per_example else p["log_alpha"]
        z = hard_concrete_gates(la, noise if training else None, h["beta"], h["limits"])
        if training and h["l0_reg"] > 0:
            reg += h["l0_reg"] * batch_mean(hard_concrete_l0(la, h["beta"], h["limits"]))
        return GateOutput(hard_concrete_weights(z), reg)

    if logits is None:
        logits = p["logits"]
    if config.name == "softmax":
        return GateOutput(softmax_weights(logits), 0.0)
    # topk
    if training and h["noisy"]:
        noise_l = affine("noise_kernel", None) if config.per_example else p["noise_logits"]
        if noise is None:
            raise ValueError("noise: expected standard normal noise for a noisy Top-k gate in training; got None")
        logits = logits + np.asarray(noise) * np.logaddexp(0.0, noise_l)
    q = topk_weights(logits, k)
    if training and h["load_balance"] > 0:
        reg += h["load_balance"] * load_balance_cv2(q)
    return GateOutput(q, reg)


def _dselect_k_regularization(config: spec.GateConfig, z: np.ndarray, calls: int | None, batch_mean) -> float:
    """DSelect-k's training loss: the (scheduled) entropy weight times ``H``, plus the unreachable-code penalty when
    ``n`` is not a power of 2."""
    h, n, reg = config.hparams, config.num_experts, 0.0
    if h["entropy_schedule"] is not None:
        if calls is None:
            raise ValueError("calls: expected the 1-based count of training calls; got None")
        reg += float(h["entropy_schedule"](calls)) * batch_mean(dselect_k_entropy(z, n, h["gamma"]))
    elif h["entropy_reg"] > 0:
        reg += h["entropy_reg"] * batch_mean(dselect_k_entropy(z, n, h["gamma"]))
    if not spec.is_power_of_two(n):
        reg += batch_mean(dselect_k_unreachable_penalty(z, n, h["gamma"]))
    return reg


def routing_logits(
    config: spec.GateConfig,
    params: Mapping[str, np.ndarray],
    x: np.ndarray | None = None,
    noise: np.ndarray | None = None,
    training: bool = False,
) -> np.ndarray:
    """The float64 logits a softmax or Top-k gate selects from, or a hard-concrete gate's ``log_alpha``.

    ``(b, n)`` for a per-example gate, ``(1, n)`` for a static one. A noisy Top-k gate in training with ``noise``
    given (its standard normal ``eps``, shaped like the weights) adds ``eps * softplus(x @ noise_kernel)`` (static:
    ``eps * softplus(noise_logits)``), the logits its Top-k is taken of. DSelect-k has no such logits.
    """
    if config.name == "dselect_k":
        raise ValueError("config: expected a softmax, topk or hard_concrete gate; got 'dselect_k' (no routing logits)")
    p = config.check_params(params)
    config.check_input(None if x is None else np.shape(x))
    key = "log_alpha" if config.name == "hard_concrete" else "logits"
    if config.per_example:
        x = np.asarray(x, dtype=np.float64)
        logits = x @ p["kernel"] + p["bias"]
        noise_l = x @ p["noise_kernel"] if "noise_kernel" in p else None
    else:
        logits = p[key][None, :]
        noise_l = p["noise_logits"][None, :] if "noise_logits" in p else None
    if training and config.name == "topk" and config.hparams["noisy"] and noise is not None:
        eps = np.asarray(noise, dtype=np.float64)
        if eps.size != logits.size:
            raise ValueError(f"noise: expected {logits.size} values (the weights' shape); got shape {eps.shape}")
        logits = logits + eps.reshape(logits.shape) * np.logaddexp(0.0, noise_l)
    return logits
