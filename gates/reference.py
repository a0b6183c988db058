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


def sigmoid_topk_weights(logits: np.ndarray, k: int, bias: np.ndarray | None = None,
                         normalize: bool = True) -> np.ndarray:
    """``(..., n) -> (..., n)``: DeepSeek-V3's router. Scores ``s = sigmoid(l)``; the ``k`` largest of ``s + bias``
    are selected (``bias (n,)`` or shaped like ``l``, selection only; ties to the lower index); weights are the
    unbiased selected scores, divided by their sum when ``normalize``."""
    logits = np.asarray(logits, dtype=np.float64)
    spec.check_min_rank("logits", logits.shape, 1, "(..., n)")
    scores = 1.0 / (1.0 + np.exp(-logits))
    # without a bias the k largest scores are the k largest logits (sigmoid is increasing); selecting on the logits
    # keeps exact ties exact (TensorFlow's vectorised sigmoid can round equal inputs apart by their position)
    choice = logits if bias is None else scores + np.asarray(bias, dtype=np.float64)
    q = np.where(topk_mask(choice, k), scores, 0.0)
    return q / q.sum(axis=-1, keepdims=True) if normalize else q


def _sorted_support(logits: np.ndarray, keep) -> np.ndarray:
    """Boolean support of a sort-based sparse map: with ``z`` sorted descending, the ``j`` largest for the number
    ``j`` of 1-based positions where ``keep(z_sorted, j)`` holds (``(..., n)``; the kept positions are a prefix)."""
    z = np.sort(logits, axis=-1)[..., ::-1]
    j = np.arange(1, logits.shape[-1] + 1)
    size = keep(z, j).sum(axis=-1, keepdims=True)  # (..., 1), >= 1
    kth = np.take_along_axis(z, size - 1, axis=-1)
    return logits >= kth


def sparsemax_weights(logits: np.ndarray) -> np.ndarray:
    """``(..., n) -> (..., n)``: sparsemax (Martins & Astudillo 2016), the Euclidean projection onto the simplex,
    ``max(z - tau, 0)``; support: the ``j`` largest with ``1 + j z_(j) > sum_{i<=j} z_(i)``."""
    z = np.asarray(logits, dtype=np.float64)
    spec.check_min_rank("logits", z.shape, 1, "(..., n)")
    support = _sorted_support(z, lambda zs, j: 1.0 + j * zs > np.cumsum(zs, axis=-1))
    tau = ((z * support).sum(axis=-1, keepdims=True) - 1.0) / support.sum(axis=-1, keepdims=True)
    return np.maximum(z - tau, 0.0)


def _entmax15_tau(u: np.ndarray, j: np.ndarray | int) -> np.ndarray:
    """``tau`` of 1.5-entmax when ``u`` (``(..., j)`` or masked sums) are the ``j`` kept values: the root of
    ``sum (u_i - tau)^2 = 1`` below ``min u``: ``mean - sqrt(max(0, (1 - j var) / j))``."""
    mean = np.cumsum(u, axis=-1) / j
    var = np.cumsum(u**2, axis=-1) / j - mean**2
    return mean - np.sqrt(np.maximum(0.0, (1.0 - j * var) / j))


def entmax15_weights(logits: np.ndarray) -> np.ndarray:
    """``(..., n) -> (..., n)``: 1.5-entmax (Peters, Niculae & Martins 2019), ``max(z/2 - tau, 0)^2`` with ``tau``
    such that the weights sum to 1, by the exact sort-based algorithm on ``u = z/2``: for the ``j`` largest,
    ``tau_j = mean_j - sqrt(max(0, (1 - j var_j) / j))``; the support is every ``j`` with ``tau_j <= u_(j)``."""
    u = np.asarray(logits, dtype=np.float64) / 2.0
    spec.check_min_rank("logits", u.shape, 1, "(..., n)")
    support = _sorted_support(u, lambda us, j: _entmax15_tau(us, j) <= us)
    j = support.sum(axis=-1, keepdims=True)
    mean = (u * support).sum(axis=-1, keepdims=True) / j
    var = (u**2 * support).sum(axis=-1, keepdims=True) / j - mean**2
    tau = mean - np.sqrt(np.maximum(0.0, (1.0 - j * var) / j))
    return np.maximum(u - tau, 0.0) ** 2


def relu_weights(logits: np.ndarray) -> np.ndarray:
    """``(..., n) -> (..., n)``: ReMoE's ``relu(l)``, not normalised."""
    logits = np.asarray(logits, dtype=np.float64)
    spec.check_min_rank("logits", logits.shape, 1, "(..., n)")
    return np.maximum(logits, 0.0)


def router_z_loss(logits: np.ndarray) -> float:
    """ST-MoE's router z-loss: ``mean over rows of logsumexp(l)^2`` (``(..., n) -> ()``)."""
    logits = np.asarray(logits, dtype=np.float64)
    spec.check_min_rank("logits", logits.shape, 1, "(..., n)")
    top = logits.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
    return float(np.mean(lse**2))


def expert_load(weights: np.ndarray) -> np.ndarray:
    """Tokens routed to each expert: the count of non-zero weights per expert over all rows, ``(..., n) -> (n,)``."""
    weights = np.asarray(weights)
    spec.check_min_rank("weights", weights.shape, 1, "(..., n)")
    return (weights.reshape(-1, weights.shape[-1]) != 0).sum(axis=0).astype(np.float64)


def switch_balance_loss(probs: np.ndarray, weights: np.ndarray, k: int) -> float:
    """Switch Transformer load balancing as Megatron-Core writes it: ``n sum_e f_e P_e`` with ``f_e`` the tokens
    routed to ``e`` over ``T k`` and ``P_e`` the mean router probability; ``f`` carries no gradient."""
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, np.shape(probs)[-1])
    spec.check_same_shape("weights", np.shape(weights)[-1:], probs.shape[-1:], "probs' last axis")
    rows, n = probs.shape
    f = expert_load(weights) / (rows * k)
    return float(n * np.sum(f * probs.mean(axis=0)))


def sigmoid_topk_bias_step(bias: np.ndarray, load: np.ndarray, rate: float, centered: bool = False) -> np.ndarray:
    """The aux-loss-free balancing step: ``bias + rate sign(mean(load) - load)`` (per row of ``(..., n)``);
    ``centered`` also subtracts the mean of that change, as torchtitan does."""
    load = np.asarray(load, dtype=np.float64)
    delta = rate * np.sign(load.mean(axis=-1, keepdims=True) - load)
    if centered:
        delta = delta - delta.mean(axis=-1, keepdims=True)
    return np.asarray(bias, dtype=np.float64) + delta


def remoe_sparsity(weights: np.ndarray) -> float:
    """The fraction of zero weights."""
    return float(np.mean(np.asarray(weights) == 0))


def remoe_l1_step(coef: np.ndarray, sparsity: np.ndarray, alpha: float, target: float) -> np.ndarray:
    """ReMoE's coefficient step: ``coef alpha^sign(target - sparsity)``."""
    return np.asarray(coef, dtype=np.float64) * alpha ** np.sign(target - np.asarray(sparsity, dtype=np.float64))


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
    state: Mapping[str, np.ndarray] | None = None,
) -> GateOutput:
    """Reference forward of a gate built by ``make_gate``: same parameters, same regularisers, float64.

    ``noise`` is Top-k's standard normal ``eps`` (noisy gates in training) or hard concrete's uniform ``u``
    (training). Per-example regularisers are batch means, or batch sums with ``regularizer_reduction="sum"``.
    ``calls``: the 1-based count of training calls, which a DSelect-k ``entropy_schedule`` turns into the entropy
    weight (``entropy_schedule(calls)`` in place of ``entropy_reg``). ``state``: sigmoid_topk's ``expert_bias`` or
    ReMoE's ``l1_coef`` (``GateConfig.state_shapes``); ``None`` is the initial state.
    """
    p = config.check_params(params)
    st = config.check_state(config.init_state() if state is None else state)
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
    if config.name not in ("softmax", "topk"):
        return _new_logit_gate(config, logits, st, training)
    if config.name == "softmax":
        q = softmax_weights(logits)
        return GateOutput(q, _router_regularization(config, logits, q) if training else 0.0)
    noise_l = None
    if training and h["noisy"]:
        noise_l = affine("noise_kernel", None) if config.per_example else p["noise_logits"]
    return _topk(config, logits, noise_l, noise, training)


def _topk(config: spec.GateConfig, logits: np.ndarray, noise_l: np.ndarray | None, noise: np.ndarray | None,
          training: bool) -> GateOutput:
    """Top-k on ``logits`` (plus ``noise * softplus(noise_l)`` for a noisy gate in training), with load balancing and
    the router regularisers (of the clean logits) in training."""
    h, reg, clean = config.hparams, 0.0, logits
    if noise_l is not None:
        if noise is None:
            raise ValueError("noise: expected standard normal noise for a noisy Top-k gate in training; got None")
        logits = logits + np.asarray(noise) * np.logaddexp(0.0, noise_l)
    q = topk_weights(logits, config.k)
    if training and h["load_balance"] > 0:
        reg += h["load_balance"] * load_balance_cv2(q)
    if training:
        reg += _router_regularization(config, clean, q)
    return GateOutput(q, reg)


def _router_probs(config: spec.GateConfig, logits: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The router probabilities ``P`` of the Switch loss: softmax of the logits (softmax, Top-k), the normalised
    sigmoid scores (sigmoid_topk, as Megatron-Core), the gate's own weights (sparsemax, entmax15, ReMoE)."""
    if config.name in ("softmax", "topk"):
        return softmax_weights(logits)
    if config.name == "sigmoid_topk":
        s = 1.0 / (1.0 + np.exp(-logits))
        return s / s.sum(axis=-1, keepdims=True)
    return q


def _router_regularization(config: spec.GateConfig, logits: np.ndarray, q: np.ndarray) -> float:
    """``z_loss * mean(logsumexp(l)^2) + switch_balance * n sum_e f_e P_e`` (training only)."""
    h, reg = config.hparams, 0.0
    if h["z_loss"] > 0:
        reg += h["z_loss"] * router_z_loss(logits)
    if h["switch_balance"] > 0:
        reg += h["switch_balance"] * switch_balance_loss(_router_probs(config, logits, q), q, config.k)
    return reg


def _new_logit_gate(config: spec.GateConfig, logits: np.ndarray, state: Mapping[str, np.ndarray],
                    training: bool) -> GateOutput:
    """sigmoid_topk, sparsemax, entmax15 and ReMoE on their logits; ReMoE's L1 term is ``l1_coef`` times the batch
    mean of ``sum_e q_e`` (or, ``l1_balanced``, the Switch form of ReMoE's code, ``n sum_e f_e mean(q_e)``)."""
    h = config.hparams
    if config.name == "sigmoid_topk":
        q = sigmoid_topk_weights(logits, config.k, state["expert_bias"], h["normalize"])
    elif config.name == "sparsemax":
        q = sparsemax_weights(logits)
    elif config.name == "entmax15":
        q = entmax15_weights(logits)
    else:
        q = relu_weights(logits)
    if not training:
        return GateOutput(q, 0.0)
    reg = _router_regularization(config, logits, q)
    if config.name == "remoe":
        l1 = switch_balance_loss(q, q, config.k) if h["l1_balanced"] else float(np.mean(q.sum(axis=-1)))
        reg += float(state["l1_coef"]) * l1
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
