"""TensorFlow gates: the functional core and ``make_gate`` Keras layers. Reads line by line against ``gates/torch.py``.

Shapes: ``b`` batch, ``p`` routing-input width, ``n`` experts, ``k`` selectors, ``m = ceil(log2 n)``, ``N = 2^m``.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from . import recipe, spec

__all__ = [
    "softmax_weights",
    "topk_weights",
    "smooth_step",
    "dselect_k_selectors",
    "dselect_k_weights",
    "dselect_k_entropy",
    "dselect_k_unreachable_penalty",
    "hard_concrete_gates",
    "hard_concrete_weights",
    "hard_concrete_l0",
    "load_balance_cv2",
    "sigmoid_topk_weights",
    "sparsemax_weights",
    "entmax15_weights",
    "relu_weights",
    "router_z_loss",
    "expert_load",
    "switch_balance_loss",
    "sigmoid_topk_bias_step",
    "remoe_sparsity",
    "remoe_l1_step",
    "make_gate",
    "Gate",
    "DSELECT_K_IMPLS",
    "OPS",
]

DSELECT_K_IMPLS = tuple(i for i in spec.DSELECT_K_IMPLS if i not in spec.TORCH_ONLY_IMPLS)  # no "triton"


def _is_tensor(t: Any) -> bool:
    return tf.is_tensor(t) or isinstance(t, (tf.Variable, keras.Variable, keras.KerasTensor))


def _check_input(name: str, t: Any, rank: int = 0, legend: str = "") -> None:
    """``t`` is a floating-point ``tf.Tensor`` (or variable; of rank ``>= rank``); reads its type, dtype and shape
    only."""
    is_tensor = _is_tensor(t)
    spec.check_tensor(name, t, is_tensor, "tf.Tensor", t.dtype if is_tensor else None)
    if rank:
        spec.check_min_rank(name, t.shape, rank, legend)


def softmax_weights(logits: tf.Tensor) -> tf.Tensor:
    """``(..., n) -> (..., n)``: ``softmax(l)``."""
    _check_input("logits", logits, 1, "(..., n)")
    return tf.nn.softmax(logits, axis=-1)


def topk_weights(logits: tf.Tensor, k: int) -> tf.Tensor:
    """``(..., n) -> (..., n)``: softmax over the ``k`` largest logits, exact zeros elsewhere.

    Ties at the k-th value go to the lower expert index. A row with a NaN logit gives a NaN row.
    """
    _check_input("logits", logits, 1, "(..., n)")
    k = spec.check_k(k, logits.shape[-1])
    mask = _topk_mask(logits, k)
    q = tf.nn.softmax(tf.where(mask, logits, tf.constant(-np.inf, logits.dtype)), axis=-1)
    return _nan_rows(logits, q)


def _topk_mask(scores: tf.Tensor, k: int) -> tf.Tensor:
    """``(..., n)`` bool, exactly ``k`` True per finite row: the ``k`` largest, ties to the lower index."""
    kth = tf.math.top_k(scores, k).values[..., -1:]  # (..., 1)
    above = scores > kth  # (..., n)
    tied = scores == kth  # (..., n)
    need = k - tf.reduce_sum(tf.cast(above, tf.int32), axis=-1, keepdims=True)  # (..., 1)
    return above | (tied & (tf.cumsum(tf.cast(tied, tf.int32), axis=-1) <= need))  # (..., n)


def _nan_rows(logits: tf.Tensor, q: tf.Tensor) -> tf.Tensor:
    """``q`` with every row whose logits hold a NaN set to NaN."""
    nan_row = tf.reduce_any(tf.math.is_nan(logits), axis=-1, keepdims=True)
    return tf.where(nan_row, tf.constant(np.nan, q.dtype), q)


def sigmoid_topk_weights(logits: tf.Tensor, k: int, bias: tf.Tensor | None = None,
                         normalize: bool = True) -> tf.Tensor:
    """``(..., n) -> (..., n)``: DeepSeek-V3's router. Scores ``s = sigmoid(l)``; the ``k`` largest of ``s + bias``
    are selected (``bias`` broadcast to ``l``, selection only: it gets no gradient; ties to the lower index);
    weights are the unbiased selected scores, divided by their sum when ``normalize``."""
    _check_input("logits", logits, 1, "(..., n)")
    k = spec.check_k(k, logits.shape[-1])
    scores = tf.sigmoid(logits)
    # no bias: select on the logits (the same k as on the scores; tf.sigmoid can round equal inputs apart by their
    # position in the tensor, which would break a tie that the logits keep exact)
    choice = tf.stop_gradient(logits if bias is None else scores + tf.cast(bias, scores.dtype))
    q = tf.where(_topk_mask(choice, k), scores, tf.zeros_like(scores))
    if normalize:
        q = q / tf.reduce_sum(q, axis=-1, keepdims=True)
    return _nan_rows(logits, q)


def _sorted_support(z: tf.Tensor, keep) -> tf.Tensor:
    """Boolean support of a sort-based sparse map: with ``z`` sorted descending, the ``j`` largest for the number
    ``j`` of 1-based positions where ``keep(z_sorted, j)`` holds (``(..., n)``; no gradient flows through it)."""
    z = tf.stop_gradient(z)
    zs = tf.sort(z, axis=-1, direction="DESCENDING")
    j = tf.range(1, z.shape[-1] + 1, dtype=z.dtype)
    size = tf.reduce_sum(tf.cast(keep(zs, j), tf.int32), axis=-1, keepdims=True)  # (..., 1)
    size = tf.clip_by_value(size, 1, z.shape[-1])  # a NaN row keeps an index in range (its output is NaN)
    kth = tf.gather(zs, size - 1, batch_dims=len(z.shape) - 1)  # (..., 1)
    return z >= kth


def sparsemax_weights(logits: tf.Tensor) -> tf.Tensor:
    """``(..., n) -> (..., n)``: sparsemax, ``max(z - tau, 0)`` summing to 1, by the sort-based threshold: the
    support is the ``j`` largest with ``1 + j z_(j) > sum_{i<=j} z_(i)``, ``tau = (sum_support z - 1) / j``."""
    _check_input("logits", logits, 1, "(..., n)")
    support = tf.cast(_sorted_support(logits, lambda zs, j: 1.0 + j * zs > tf.cumsum(zs, axis=-1)), logits.dtype)
    tau = (tf.reduce_sum(logits * support, -1, keepdims=True) - 1.0) / tf.reduce_sum(support, -1, keepdims=True)
    return _nan_rows(logits, tf.nn.relu(logits - tau))


def _entmax15_tau(u: tf.Tensor, j: tf.Tensor) -> tf.Tensor:
    """1.5-entmax's ``tau`` for the ``j`` largest of ``u`` (sorted descending):
    ``mean - sqrt(max(0, (1 - j var) / j))``."""
    mean = tf.cumsum(u, axis=-1) / j
    var = tf.cumsum(u**2, axis=-1) / j - mean**2
    return mean - tf.sqrt(tf.maximum(0.0 * var, (1.0 - j * var) / j))


def entmax15_weights(logits: tf.Tensor) -> tf.Tensor:
    """``(..., n) -> (..., n)``: 1.5-entmax, ``max(z/2 - tau, 0)^2`` summing to 1, by the exact sort-based algorithm
    on ``u = z/2`` (the support is every ``j`` with ``tau_j <= u_(j)``); gradients through ``tau`` on that support."""
    _check_input("logits", logits, 1, "(..., n)")
    u = logits / 2.0
    support = tf.cast(_sorted_support(u, lambda us, j: _entmax15_tau(us, j) <= us), u.dtype)
    j = tf.reduce_sum(support, axis=-1, keepdims=True)
    mean = tf.reduce_sum(u * support, axis=-1, keepdims=True) / j
    var = tf.reduce_sum(u**2 * support, axis=-1, keepdims=True) / j - mean**2
    tau = mean - tf.sqrt(tf.maximum(tf.zeros_like(var), (1.0 - j * var) / j))
    return _nan_rows(logits, tf.nn.relu(u - tau) ** 2)


def relu_weights(logits: tf.Tensor) -> tf.Tensor:
    """``(..., n) -> (..., n)``: ReMoE's ``relu(l)``, not normalised."""
    _check_input("logits", logits, 1, "(..., n)")
    return _nan_rows(logits, tf.nn.relu(logits))


def router_z_loss(logits: tf.Tensor) -> tf.Tensor:
    """ST-MoE's router z-loss: ``mean over rows of logsumexp(l)^2``, ``(..., n) -> ()``."""
    _check_input("logits", logits, 1, "(..., n)")
    return tf.reduce_mean(tf.square(tf.reduce_logsumexp(logits, axis=-1)))


def expert_load(weights: tf.Tensor) -> tf.Tensor:
    """Tokens routed to each expert: non-zero weights counted over all rows, ``(..., n) -> (n,)`` (no gradient)."""
    spec.check_min_rank("weights", weights.shape, 1, "(..., n)")
    dtype = weights.dtype if weights.dtype.is_floating else tf.float32
    nonzero = tf.cast(tf.reshape(weights, [-1, weights.shape[-1]]) != 0, dtype)
    return tf.reduce_sum(nonzero, axis=0)


def switch_balance_loss(probs: tf.Tensor, weights: tf.Tensor, k: int) -> tf.Tensor:
    """Switch load balancing as Megatron-Core writes it: ``n sum_e f_e P_e``, ``f_e`` the tokens routed to ``e``
    (non-zero ``weights``) over ``T k``, ``P_e`` the mean of ``probs``; ``f`` carries no gradient."""
    spec.check_same_shape("weights", weights.shape[-1:], probs.shape[-1:], "probs' last axis")
    probs = tf.reshape(probs, [-1, probs.shape[-1]])  # (T, n)
    rows = tf.cast(tf.shape(probs)[0], probs.dtype)
    f = tf.cast(expert_load(weights), probs.dtype) / (rows * k)
    return probs.shape[-1] * tf.reduce_sum(f * tf.reduce_mean(probs, axis=0))


def sigmoid_topk_bias_step(bias: tf.Tensor, load: tf.Tensor, rate: float, centered: bool = False) -> tf.Tensor:
    """The aux-loss-free balancing step: ``bias + rate sign(mean(load) - load)`` per row of ``(..., n)``;
    ``centered`` also subtracts the mean of that change (torchtitan's)."""
    load = tf.cast(load, bias.dtype)
    delta = rate * tf.sign(tf.reduce_mean(load, axis=-1, keepdims=True) - load)
    if centered:
        delta = delta - tf.reduce_mean(delta, axis=-1, keepdims=True)
    return bias + delta


def remoe_sparsity(weights: tf.Tensor) -> tf.Tensor:
    """The fraction of zero weights (no gradient)."""
    return tf.reduce_mean(tf.cast(tf.stop_gradient(weights) == 0, weights.dtype))


def remoe_l1_step(coef: tf.Tensor, sparsity: tf.Tensor, alpha: float, target: float) -> tf.Tensor:
    """ReMoE's coefficient step: ``coef alpha^sign(target - sparsity)``."""
    coef = tf.convert_to_tensor(coef)
    return coef * tf.pow(tf.constant(alpha, coef.dtype), tf.sign(target - tf.cast(sparsity, coef.dtype)))


def smooth_step(t: tf.Tensor, gamma: float = 1.0) -> tf.Tensor:
    """Cubic smooth-step: exactly 0 below ``-gamma/2`` and 1 above ``gamma/2`` (zero gradient there)."""
    gamma = spec.check_gamma(gamma)
    poly = -2.0 / gamma**3 * t**3 + 1.5 / gamma * t + 0.5
    return tf.where(t <= -gamma / 2, tf.zeros_like(t), tf.where(t >= gamma / 2, tf.ones_like(t), poly))


def _selectors_bitwise(s: tf.Tensor, num_experts: int) -> tf.Tensor:
    """``s (..., k, m) -> r (..., k, n)`` built bit by bit (codes most significant bit first): O(n) per selector.

    Bits are added from the least significant: ``r <- [(1 - s_j) r, s_j r]``, an outer product ``(2, 1) @ (1, L)``
    per selector whose long axis is the inner one. Written as a broadcast multiplication, which in eager
    TensorFlow on the CPU ran faster than the batched matmul that ``gates/torch.py`` uses (the default path is
    compiled by XLA either way; ``suites/dselect_cpu.toml`` times the bitwise build).
    """
    f = tf.stack([1 - s, s], axis=-1)  # (..., k, m, 2): the two factors of every bit
    m = s.shape[-1]
    r = f[..., m - 1, :]  # (..., k, 2)
    for j in range(m - 2, -1, -1):
        both = f[..., j, :, None] * r[..., None, :]  # (..., k, 2, L)
        r = tf.reshape(both, tf.concat([tf.shape(r)[:-1], [-1]], axis=0))  # (..., k, 2L): index bit L + i
    return r[..., :num_experts]


def _weights_factorized(s: tf.Tensor, alpha: tf.Tensor, num_experts: int) -> tf.Tensor:
    """``q = sum_i alpha_i r_i`` without building ``r``. Codes split into ``hi = floor(m/2)`` high and
    ``lo = m - hi`` low bits, ``e = h 2^lo + l``, so ``r_i[e] = rh_i[h] rl_i[l]`` and ``q`` reshaped
    ``(2^hi, 2^lo)`` is ``sum_i alpha_i rh_i rl_i^T``: one batched ``(2^hi, k) @ (k, 2^lo)`` product, memory
    O(k sqrt(n)) per example besides ``q``. Both halves are built in one pass: the high half gets ``lo - hi``
    leading bits fixed at 0 (factor ``[1, 0]``), so its extra rows are zero and come after the real ones."""
    m = s.shape[-1]
    lo = m - m // 2
    high = s[..., : m - lo]
    if 2 * lo > m:  # dummy leading bits
        high = tf.concat([tf.zeros_like(s[..., : 2 * lo - m]), high], axis=-1)  # (..., k, lo)
    halves = _selectors_bitwise(tf.stack([high, s[..., m - lo :]], axis=-3), 1 << lo)  # (..., 2, k, 2^lo)
    rh, rl = tf.unstack(halves, axis=-3)  # (..., k, 2^lo) each
    q = tf.einsum("...kh,...kl->...hl", rh * alpha[..., None], rl)  # (..., 2^lo, 2^lo)
    q = tf.reshape(q, tf.concat([tf.shape(q)[:-2], [-1]], axis=0))
    return q[..., :num_experts]


def _selectors_reference(s: tf.Tensor, num_experts: int) -> tf.Tensor:
    """The reference layer's formulation: a product over a ``(..., k, n, m)`` tensor. Kept for benchmarks."""
    codes = tf.constant(spec.binary_codes(num_experts).astype(bool))  # (n, m)
    s = s[..., None, :]  # (..., k, 1, m)
    return tf.reduce_prod(tf.where(codes, s, 1 - s), axis=-1)  # (..., k, n)


def _check_dselect_k(z_logits, w_logits, num_experts, gamma) -> tuple[int, float]:
    num_experts = spec.check_num_experts(num_experts)
    gamma = spec.check_gamma(gamma)
    _check_input("z_logits", z_logits, 2, "(..., k, m)")
    spec.check_last_dim("z_logits", z_logits.shape, spec.num_code_bits(num_experts))
    if w_logits is not None:
        _check_input("w_logits", w_logits)
        spec.check_same_shape("w_logits", w_logits.shape, z_logits.shape[:-1], "z_logits without its last axis")
    return num_experts, gamma


def dselect_k_selectors(z_logits: tf.Tensor, num_experts: int, gamma: float = 1.0) -> tf.Tensor:
    """``z_logits (..., k, m) -> r (..., k, n)``: each selector's distribution over experts."""
    num_experts, gamma = _check_dselect_k(z_logits, None, num_experts, gamma)
    return _selectors_bitwise(smooth_step(z_logits, gamma), num_experts)


def dselect_k_weights(
    z_logits: tf.Tensor, w_logits: tf.Tensor, num_experts: int, gamma: float = 1.0, impl: str = "auto"
) -> tf.Tensor:
    """``z_logits (..., k, m)``, ``w_logits (..., k) -> q (..., n)``: ``q = sum_i softmax(w)_i r(z_i)``.

    ``impl``: ``"factorized"`` (never builds the ``(..., k, n)`` selectors: one batched product of their high-bit
    and low-bit halves, see ``_weights_factorized``), ``"bitwise"`` (builds ``(..., k, n)`` bit by bit),
    ``"reference"`` (the reference layer's ``(..., k, n, m)`` product, for comparison only). ``"auto"`` is
    ``"factorized"`` compiled by XLA as one function (``tf.function(jit_compile=True)``, forward and backward):
    in eager TensorFlow each small op otherwise pays its own dispatch. All are plain autodiff.
    """
    num_experts, gamma = _check_dselect_k(z_logits, w_logits, num_experts, gamma)
    spec.check_impl("dselect_k", impl, "tf")
    dtype = z_logits.dtype
    if dtype in (tf.bfloat16, tf.float16):  # half-precision inputs: compute and accumulate in float32
        q = dselect_k_weights(tf.cast(z_logits, tf.float32), tf.cast(w_logits, tf.float32), num_experts, gamma, impl)
        return tf.cast(q, dtype)
    if impl == "auto":
        return _compiled_factorized(num_experts, gamma)(z_logits, w_logits)
    s = smooth_step(z_logits, gamma)  # (..., k, m)
    alpha = tf.nn.softmax(w_logits, axis=-1)  # (..., k)
    if impl == "factorized":
        return _weights_factorized(s, alpha, num_experts)  # (..., n)
    r = _selectors_bitwise(s, num_experts) if impl == "bitwise" else _selectors_reference(s, num_experts)
    return tf.einsum("...k,...kn->...n", alpha, r)  # (..., n)


@functools.cache
def _compiled_factorized(num_experts: int, gamma: float):
    """The factorized weights as one XLA-compiled function of ``(z_logits, w_logits)``, one per ``(n, gamma)``."""

    @tf.function(jit_compile=True)
    def weights(z_logits: tf.Tensor, w_logits: tf.Tensor) -> tf.Tensor:
        s = smooth_step(z_logits, gamma)
        return _weights_factorized(s, tf.nn.softmax(w_logits, axis=-1), num_experts)

    return weights


def dselect_k_entropy(z_logits: tf.Tensor, num_experts: int, gamma: float = 1.0) -> tf.Tensor:
    """Sum over selectors of ``H(r) = -sum_e r_e log(r_e + 1e-6)``: ``(..., k, m) -> (...)``."""
    return _entropy(dselect_k_selectors(z_logits, num_experts, gamma))


def _entropy(r: tf.Tensor) -> tf.Tensor:
    return -tf.reduce_sum(r * tf.math.log(r + spec.ENTROPY_EPS), axis=[-2, -1])  # r (..., k, n) -> (...)


def dselect_k_unreachable_penalty(z_logits: tf.Tensor, num_experts: int, gamma: float = 1.0) -> tf.Tensor:
    """Sum over selectors of ``1 / sum_{e<n} r_e``: ``(..., k, m) -> (...)``."""
    return _unreachable_penalty(dselect_k_selectors(z_logits, num_experts, gamma))


def _unreachable_penalty(r: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(1.0 / tf.reduce_sum(r, axis=-1), axis=-1)  # r (..., k, n) -> (...)


def hard_concrete_gates(
    log_alpha: tf.Tensor,
    u: tf.Tensor | None = None,
    beta: float = spec.HARD_CONCRETE_BETA,
    limits: tuple[float, float] = spec.HARD_CONCRETE_LIMITS,
    *,
    check_u: bool = True,
) -> tf.Tensor:
    """``(..., n) -> (..., n)`` in [0, 1]. ``u=None``: deterministic test-time gate; else ``u`` is the uniform noise.

    The range check of ``u`` reads its values: it runs in eager mode, not inside a ``tf.function`` trace, and
    ``check_u=False`` skips it (the layers check the noise a caller passes in ``__call__`` and draw the rest).
    """
    beta = spec.check_positive("beta", beta)
    lo, hi = spec.check_limits(limits)
    _check_input("log_alpha", log_alpha, 1, "(..., n)")
    if u is None:
        s = tf.sigmoid(log_alpha)
    else:
        _check_input("u", u)
        spec.check_same_shape("u", u.shape, log_alpha.shape, "log_alpha")
        if check_u and tf.executing_eagerly() and u.shape.num_elements() != 0:  # an empty batch: nothing to check
            spec.check_unit_interval_open("u", float(tf.reduce_min(u)), float(tf.reduce_max(u)))
        s = tf.sigmoid((tf.math.log(u) - tf.math.log1p(-u) + log_alpha) / beta)
    return tf.clip_by_value(s * (hi - lo) + lo, 0.0, 1.0)


def hard_concrete_weights(gates: tf.Tensor) -> tf.Tensor:
    """``q = z / sum(z)``; an all-zero row stays all-zero."""
    total = tf.reduce_sum(gates, axis=-1, keepdims=True)
    return gates / tf.where(total == 0, tf.ones_like(total), total)


def hard_concrete_l0(
    log_alpha: tf.Tensor,
    beta: float = spec.HARD_CONCRETE_BETA,
    limits: tuple[float, float] = spec.HARD_CONCRETE_LIMITS,
) -> tf.Tensor:
    """Expected number of non-zero gates, ``(..., n) -> (...)``."""
    beta = spec.check_positive("beta", beta)
    lo, hi = spec.check_limits(limits)
    return tf.reduce_sum(tf.sigmoid(log_alpha - beta * float(np.log(-lo / hi))), axis=-1)


def load_balance_cv2(weights: tf.Tensor) -> tf.Tensor:
    """CV^2 of per-expert importance (weights summed over the batch), population variance."""
    importance = tf.reduce_sum(tf.reshape(weights, [-1, weights.shape[-1]]), axis=0)  # (n,)
    mean = tf.reduce_mean(importance)
    return tf.reduce_mean((importance - mean) ** 2) / (mean**2 + spec.CV_EPS)


# --------------------------------------------------------------------------------------------------------------
# Layers.
# --------------------------------------------------------------------------------------------------------------
class Gate(keras.layers.Layer):
    """A gate built by ``make_gate``: owns parameters (``gate.params``), computes through ``gates.recipe``.

    ``gate()`` (static) or ``gate(x)`` (per-example, ``x (b, p)``) returns the expert weights ``(n,)`` or ``(b, n)``.
    With ``training=True`` the call also sets ``gate.regularization_loss`` (a scalar tensor; 0 otherwise) and adds
    it to ``gate.losses``. ``noise``: Top-k's standard normal noise or hard concrete's uniform ``u`` for a training
    sample; drawn from TensorFlow's generator when omitted. A given ``u`` is checked to lie in (0, 1) when running
    eagerly, which reads its values (a host sync on a GPU); ``check_noise=False`` skips that for noise already
    checked (the harness checks its once).
    """

    def __init__(
        self,
        config: spec.GateConfig,
        dtype: str = "float32",
        seed: Any = 0,
        impl: str = "auto",
        **kwargs: Any,
    ):
        super().__init__(dtype=spec.check_dtype(dtype), **kwargs)
        self.config = config
        self.impl = spec.check_impl(config.name, impl, "tf")
        self._params: dict[str, keras.Variable] = {}
        for key, value in config.init_params(seed).items():
            self._params[key] = self.add_weight(
                shape=value.shape, initializer=keras.initializers.Constant(value), name=key, dtype=self.dtype
            )
        self._state: dict[str, keras.Variable] = {}
        for key, value in config.init_state().items():  # non-trainable state (sigmoid_topk, ReMoE)
            self._state[key] = self.add_weight(
                shape=value.shape, initializer=keras.initializers.Constant(value), name=key, dtype=self.dtype,
                trainable=False,
            )
        self.regularization_loss = tf.zeros((), dtype=self.compute_dtype)
        # training calls so far, counted (like the reference layer's num_calls) for a DSelect-k entropy_schedule
        self.training_calls = None
        if config.hparams.get("entropy_schedule") is not None:
            self.training_calls = self.add_weight(
                shape=(), initializer="zeros", name="training_calls", dtype="int64", trainable=False
            )

    # --- parameters as NumPy -------------------------------------------------------------------------------
    def get_numpy_params(self) -> dict[str, np.ndarray]:
        return {key: np.asarray(v.numpy(), dtype=np.float64) for key, v in self._params.items()}

    def set_numpy_params(self, params: dict[str, np.ndarray]) -> None:
        for key, value in self.config.check_params(params).items():
            self._params[key].assign(value.astype(self.dtype))

    def param(self, key: str) -> keras.Variable:
        return self._params[key]

    @property
    def params(self) -> dict[str, keras.Variable]:
        """The parameters by name (``GateConfig.param_shapes``), as the recipe reads them."""
        return self._params

    # --- non-trainable state: sigmoid_topk's expert_bias, ReMoE's l1_coef ------------------------------------
    @property
    def state(self) -> dict[str, keras.Variable]:
        """The state by name (``GateConfig.state_shapes``; empty for gates without one): non-trainable variables."""
        return self._state

    def get_numpy_state(self) -> dict[str, np.ndarray]:
        return {key: np.asarray(v.numpy(), dtype=np.float64) for key, v in self._state.items()}

    def set_numpy_state(self, state: dict[str, np.ndarray]) -> None:
        for key, value in self.config.check_state(state).items():
            self._state[key].assign(value.astype(self.dtype))

    def update_bias(self, weights_or_counts: tf.Tensor) -> None:
        """sigmoid_topk's balancing step, once per training step: ``expert_bias += bias_rate sign(mean_load -
        load)``. ``weights_or_counts``: weights ``(b, n)`` (a token counts for each expert it has a non-zero
        weight on) or the tokens per expert ``(n,)``."""
        if self.config.name != "sigmoid_topk":
            raise ValueError(f"gate: expected a sigmoid_topk gate for update_bias; got {self.config.name!r}")
        load = _load_of(weights_or_counts, self.config.num_experts)
        h, bias = self.config.hparams, self._state["expert_bias"]
        bias.assign(sigmoid_topk_bias_step(tf.convert_to_tensor(bias), load, h["bias_rate"], h["bias_centered"]))

    def update_l1_coef(self, weights: tf.Tensor) -> None:
        """ReMoE's coefficient step, once per training step: ``l1_coef *= l1_alpha^sign(target - sparsity)``,
        ``sparsity`` the fraction of zero entries of ``weights (..., n)``."""
        if self.config.name != "remoe":
            raise ValueError(f"gate: expected a remoe gate for update_l1_coef; got {self.config.name!r}")
        weights = tf.convert_to_tensor(weights)
        spec.check_last_dim("weights", weights.shape, self.config.num_experts)
        coef = self._state["l1_coef"]
        coef.assign(remoe_l1_step(tf.convert_to_tensor(coef), remoe_sparsity(weights),
                                  self.config.hparams["l1_alpha"], self.config.target_sparsity))

    # --- forward: gates.recipe ---------------------------------------------------------------------------------
    def __call__(self, x: tf.Tensor | None = None, training: bool | None = None, noise: tf.Tensor | None = None,
                 check_noise: bool = True, **kw):
        # Checked here, before Keras wraps exceptions raised inside `call` into a longer message.
        x, noise = (None if t is None else self._input(name, t) for name, t in (("x", x), ("noise", noise)))
        self.config.check_call(None if x is None else x.shape, None if noise is None else noise.shape)
        empty = noise is not None and noise.shape.num_elements() == 0
        if check_noise and noise is not None and self.config.name == "hard_concrete" and tf.executing_eagerly() \
                and not empty:
            spec.check_unit_interval_open("u", float(tf.reduce_min(noise)), float(tf.reduce_max(noise)))
        args = () if x is None else (x,)
        return super().__call__(*args, training=training, noise=noise, **kw)

    def _input(self, name: str, t: Any) -> tf.Tensor:
        """``x`` or ``noise`` checked (a floating-point tensor; type and dtype only, no values read) and cast to the
        gate's compute dtype, as Keras casts a layer's floating inputs. Placement follows ``tf.device``."""
        _check_input(name, t)
        return t if t.dtype == self.compute_dtype else tf.cast(t, self.compute_dtype)

    def call(self, x: tf.Tensor | None = None, training: bool | None = None, noise: tf.Tensor | None = None):
        training, calls = bool(training), None
        if training and self.training_calls is not None:  # a DSelect-k entropy_schedule reads the count
            self.training_calls.assign_add(1)
            calls = tf.cast(self.training_calls, self.compute_dtype)
        q, reg = recipe.gate_forward(
            _CORE, self.config, self.params, x, training=training, noise=noise, impl=self.impl, check_noise=False,
            calls=calls, state=self._state,
        )
        self.regularization_loss = reg
        if training:
            self.add_loss(reg)
        return q

    def support(self, x: tf.Tensor | None = None) -> np.ndarray:
        """Experts with non-zero test-time weight: bool ``(n,)`` static, ``(b, n)`` per-example."""
        return np.asarray(self(x, training=False).numpy() > 0)

    def compute_output_shape(self, input_shape=None):
        n = self.config.num_experts
        return (n,) if input_shape is None else (input_shape[0], n)


def _load_of(weights_or_counts: tf.Tensor, num_experts: int) -> tf.Tensor:
    """Tokens per expert ``(n,)`` from weights ``(b, n)`` (``expert_load``) or the counts themselves ``(n,)``."""
    t = tf.convert_to_tensor(weights_or_counts)
    if len(t.shape) not in (1, 2) or t.shape[-1] != num_experts:
        raise ValueError(f"weights_or_counts: expected weights (batch, {num_experts}) or counts ({num_experts},); "
                         f"got shape {tuple(t.shape)}")
    return expert_load(t) if len(t.shape) == 2 else tf.cast(t, tf.float64)


def _uniform_noise(like: tf.Tensor) -> tf.Tensor:
    eps = spec.HARD_CONCRETE_EPS
    return tf.random.uniform(tf.shape(like), eps, 1 - eps, dtype=like.dtype)


def _heads(x: tf.Tensor, heads: list[tuple[tf.Tensor, tf.Tensor | None]]) -> list[tf.Tensor]:
    """``[x @ kernel + bias for (kernel, bias) in heads]``; several heads are one matmul with the kernels side by
    side, so ``x`` is read once (forward and backward) instead of once per head. ``bias=None``: none."""
    if len(heads) == 1:
        kernel, bias = heads[0]
        out = tf.matmul(x, kernel)
        return [out + bias if bias is not None else out]
    kernels = [kernel for kernel, _ in heads]
    outs = tf.split(tf.matmul(x, tf.concat(kernels, axis=1)), [int(kr.shape[1]) for kr in kernels], axis=-1)
    return [out + bias if bias is not None else out for out, (_, bias) in zip(outs, heads, strict=True)]


OPS = recipe.Ops(
    read=tf.convert_to_tensor,
    heads=_heads,
    reshape=tf.reshape,
    softplus=tf.nn.softplus,
    sigmoid=tf.sigmoid,
    zero=lambda like: tf.zeros((), dtype=like.dtype),
    normal=lambda like: tf.random.normal(tf.shape(like), dtype=like.dtype),
    uniform=_uniform_noise,
    mean=tf.reduce_mean,
    sum=tf.reduce_sum,
    row_sum=lambda t: tf.reduce_sum(t, axis=-1, keepdims=True),
    entropy=_entropy,
    unreachable=_unreachable_penalty,
)
_CORE = sys.modules[__name__]  # the functional core above, as the recipe calls it


def make_gate(
    name: str,
    num_experts: int,
    k: int,
    input_dim: int | None = None,
    *,
    dtype: str = "float32",
    seed: Any = 0,
    impl: str = "auto",
    **hparams: Any,
) -> Gate:
    """Build a gate layer. ``input_dim=None``: static (task-only) gate; else per-example on ``x (b, input_dim)``.

    ``seed`` (an int or ``np.random.Generator``) draws the initial parameters in NumPy, so the PyTorch gate
    built with the same arguments starts from the same numbers. ``impl`` picks the DSelect-k implementation (see
    ``dselect_k_weights``); other gates have one, ``"auto"``. ``device=`` (a logical device that exists: ``"cpu"``,
    ``"GPU:0"``) places the variables; calls follow ``tf.device``.
    """
    device = _check_device(hparams.pop("device", None))
    config = spec.make_config(name, num_experts, k, input_dim, **hparams)
    if device is None:
        return Gate(config, dtype=dtype, seed=seed, impl=impl)
    with tf.device(device):
        return Gate(config, dtype=dtype, seed=seed, impl=impl)


def _check_device(device: Any) -> str | None:
    """``device`` (``"cpu"``, ``"GPU:0"``, ``"/device:CPU:0"``) as the name of a logical device that exists here,
    or ``None``."""
    if device is None:
        return None
    names = [d.name for d in tf.config.list_logical_devices()]
    try:
        want = tf.DeviceSpec.from_string(device)
    except (ValueError, TypeError, AttributeError) as exc:
        raise spec.device_error(device, names, exc) from None
    for name in names:
        have = tf.DeviceSpec.from_string(name)
        if want.device_type is not None and want.device_type.upper() == have.device_type and \
                want.device_index in (None, have.device_index):
            return name
    raise spec.device_error(device, names, "no such logical device")
