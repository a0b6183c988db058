"""PyTorch gates: the functional core and ``make_gate`` modules. Reads line by line against ``gates/tf.py``.

Shapes: ``b`` batch, ``p`` routing-input width, ``n`` experts, ``k`` selectors, ``m = ceil(log2 n)``, ``N = 2^m``.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch
from torch import nn

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

DSELECT_K_IMPLS = spec.DSELECT_K_IMPLS  # "triton" needs the triton package and CUDA tensors


def _check_input(name: str, t: Any, rank: int = 0, legend: str = "") -> None:
    """``t`` is a floating-point ``torch.Tensor`` (of rank ``>= rank``); reads its type, dtype and shape only."""
    is_tensor = isinstance(t, torch.Tensor)
    spec.check_tensor(name, t, is_tensor, "torch.Tensor", t.dtype if is_tensor else None)
    if rank:
        spec.check_min_rank(name, t.shape, rank, legend)


def softmax_weights(logits: torch.Tensor) -> torch.Tensor:
    """``(..., n) -> (..., n)``: ``softmax(l)``."""
    _check_input("logits", logits, 1, "(..., n)")
    return torch.softmax(logits, dim=-1)


def topk_weights(logits: torch.Tensor, k: int) -> torch.Tensor:
    """``(..., n) -> (..., n)``: softmax over the ``k`` largest logits, exact zeros elsewhere.

    Ties at the k-th value go to the lower expert index. A row with a NaN logit gives a NaN row.
    """
    _check_input("logits", logits, 1, "(..., n)")
    k = spec.check_k(k, logits.shape[-1])
    mask = _topk_mask(logits, k)
    q = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
    return _nan_rows(logits, q)


def _topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """``(..., n)`` bool, exactly ``k`` True per finite row: the ``k`` largest, ties to the lower index."""
    kth = torch.topk(scores, k, dim=-1).values[..., -1:]  # (..., 1)
    above = scores > kth  # (..., n)
    tied = scores == kth  # (..., n)
    need = k - above.sum(dim=-1, keepdim=True)  # (..., 1): how many tied scores to keep
    return above | (tied & (tied.cumsum(dim=-1) <= need))


def _nan_rows(logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``q`` with every row whose logits hold a NaN set to NaN."""
    return torch.where(torch.isnan(logits).any(dim=-1, keepdim=True), torch.nan, q)


def sigmoid_topk_weights(logits: torch.Tensor, k: int, bias: torch.Tensor | None = None,
                         normalize: bool = True) -> torch.Tensor:
    """``(..., n) -> (..., n)``: DeepSeek-V3's router. Scores ``s = sigmoid(l)``; the ``k`` largest of ``s + bias``
    are selected (``bias`` broadcast to ``l``, selection only: it gets no gradient; ties to the lower index);
    weights are the unbiased selected scores, divided by their sum when ``normalize``."""
    _check_input("logits", logits, 1, "(..., n)")
    k = spec.check_k(k, logits.shape[-1])
    scores = torch.sigmoid(logits)
    # no bias: select on the logits (the same k as on the scores; exact ties stay exact, see gates.reference)
    choice = logits.detach() if bias is None else scores.detach() + bias.detach()
    q = torch.where(_topk_mask(choice, k), scores, 0.0)
    if normalize:
        q = q / q.sum(dim=-1, keepdim=True)
    return _nan_rows(logits, q)


def _entmax_package():
    try:
        import entmax
    except ImportError as exc:
        raise ValueError(f"gate: sparsemax and entmax15 in PyTorch need the entmax package (pip install entmax); "
                         f"importing it failed: {exc}") from exc
    return entmax


def _nan_rows_zeroed(logits: torch.Tensor) -> torch.Tensor:
    """Rows holding a NaN replaced by zeros: the entmax package indexes out of range on a NaN row (the row is set
    back to NaN after)."""
    return torch.where(torch.isnan(logits).any(dim=-1, keepdim=True), 0.0, logits)


def sparsemax_weights(logits: torch.Tensor) -> torch.Tensor:
    """``(..., n) -> (..., n)``: sparsemax, ``max(z - tau, 0)`` summing to 1 (the ``entmax`` package's)."""
    _check_input("logits", logits, 1, "(..., n)")
    return _nan_rows(logits, _entmax_package().sparsemax(_nan_rows_zeroed(logits), dim=-1))


def entmax15_weights(logits: torch.Tensor) -> torch.Tensor:
    """``(..., n) -> (..., n)``: 1.5-entmax, ``max(z/2 - tau, 0)^2`` summing to 1 (the ``entmax`` package's exact
    sort-based ``entmax15``)."""
    _check_input("logits", logits, 1, "(..., n)")
    return _nan_rows(logits, _entmax_package().entmax15(_nan_rows_zeroed(logits), dim=-1))


def relu_weights(logits: torch.Tensor) -> torch.Tensor:
    """``(..., n) -> (..., n)``: ReMoE's ``relu(l)``, not normalised."""
    _check_input("logits", logits, 1, "(..., n)")
    return _nan_rows(logits, torch.relu(logits))


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE's router z-loss: ``mean over rows of logsumexp(l)^2``, ``(..., n) -> ()``."""
    _check_input("logits", logits, 1, "(..., n)")
    return torch.logsumexp(logits, dim=-1).square().mean()


def expert_load(weights: torch.Tensor) -> torch.Tensor:
    """Tokens routed to each expert: non-zero weights counted over all rows, ``(..., n) -> (n,)`` (no gradient)."""
    spec.check_min_rank("weights", weights.shape, 1, "(..., n)")
    dtype = weights.dtype if weights.is_floating_point() else torch.float32
    return (weights.detach().reshape(-1, weights.shape[-1]) != 0).sum(dim=0).to(dtype)


def switch_balance_loss(probs: torch.Tensor, weights: torch.Tensor, k: int) -> torch.Tensor:
    """Switch load balancing as Megatron-Core writes it: ``n sum_e f_e P_e``, ``f_e`` the tokens routed to ``e``
    (non-zero ``weights``) over ``T k``, ``P_e`` the mean of ``probs``; ``f`` carries no gradient."""
    spec.check_same_shape("weights", weights.shape[-1:], probs.shape[-1:], "probs' last axis")
    probs = probs.reshape(-1, probs.shape[-1])  # (T, n)
    f = expert_load(weights).to(probs.dtype) / (probs.shape[0] * k)
    return probs.shape[-1] * (f * probs.mean(dim=0)).sum()


def sigmoid_topk_bias_step(bias: torch.Tensor, load: torch.Tensor, rate: float,
                           centered: bool = False) -> torch.Tensor:
    """The aux-loss-free balancing step: ``bias + rate sign(mean(load) - load)`` per row of ``(..., n)``;
    ``centered`` also subtracts the mean of that change (torchtitan's)."""
    load = load.to(bias.dtype)
    delta = rate * torch.sign(load.mean(dim=-1, keepdim=True) - load)
    if centered:
        delta = delta - delta.mean(dim=-1, keepdim=True)
    return bias + delta


def remoe_sparsity(weights: torch.Tensor) -> torch.Tensor:
    """The fraction of zero weights (no gradient)."""
    return (weights.detach() == 0).to(weights.dtype).mean()


def remoe_l1_step(coef: torch.Tensor, sparsity: torch.Tensor, alpha: float, target: float) -> torch.Tensor:
    """ReMoE's coefficient step: ``coef alpha^sign(target - sparsity)``."""
    return coef * torch.pow(alpha, torch.sign(target - torch.as_tensor(sparsity, dtype=coef.dtype)))


def smooth_step(t: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Cubic smooth-step: exactly 0 below ``-gamma/2`` and 1 above ``gamma/2`` (zero gradient there)."""
    gamma = spec.check_gamma(gamma)
    poly = -2.0 / gamma**3 * t**3 + 1.5 / gamma * t + 0.5
    return torch.where(t <= -gamma / 2, 0.0, torch.where(t >= gamma / 2, 1.0, poly))


def _selectors_bitwise(s: torch.Tensor, num_experts: int) -> torch.Tensor:
    """``s (..., k, m) -> r (..., k, n)`` built bit by bit (codes most significant bit first): O(n) per selector.

    Bits are added from the least significant: ``r <- [(1 - s_j) r, s_j r]``, an outer product ``(2, 1) @ (1, L)``
    per selector whose long axis is the inner one. As a batched matmul it runs forward and backward several times
    faster on the CPU than the same broadcast multiplication (whose backward reduces over broadcast axes).
    """
    f = torch.stack([1 - s, s], dim=-1)  # (..., k, m, 2): the two factors of every bit
    m = s.shape[-1]
    r = f[..., m - 1, :]  # (..., k, 2)
    for j in range(m - 2, -1, -1):
        r = torch.matmul(f[..., j, :, None], r.unsqueeze(-2)).flatten(-2)  # (..., k, 2, L) -> (..., k, 2L): bit L + i
    return r[..., :num_experts]


def _weights_factorized(s: torch.Tensor, alpha: torch.Tensor, num_experts: int) -> torch.Tensor:
    """``q = sum_i alpha_i r_i`` without building ``r``. Codes split into ``hi = floor(m/2)`` high and
    ``lo = m - hi`` low bits, ``e = h 2^lo + l``, so ``r_i[e] = rh_i[h] rl_i[l]`` and ``q`` reshaped
    ``(2^hi, 2^lo)`` is ``sum_i alpha_i rh_i rl_i^T``: one batched ``(2^hi, k) @ (k, 2^lo)`` product, memory
    O(k sqrt(n)) per example besides ``q``. Both halves are built in one pass: the high half gets ``lo - hi``
    leading bits fixed at 0 (factor ``[1, 0]``), so its extra rows are zero and come after the real ones."""
    m = s.shape[-1]
    lo = m - m // 2
    high = torch.nn.functional.pad(s[..., : m - lo], (2 * lo - m, 0))  # (..., k, lo): dummy bits first
    halves = _selectors_bitwise(torch.stack([high, s[..., m - lo :]], dim=-3), 1 << lo)  # (..., 2, k, 2^lo)
    rh, rl = halves.unbind(dim=-3)  # (..., k, 2^lo) each
    q = torch.einsum("...kh,...kl->...hl", rh * alpha.unsqueeze(-1), rl)  # (..., 2^lo, 2^lo)
    return q.flatten(-2)[..., :num_experts]


def _triton_kernels():
    """``gates.dselect_triton``, imported on first use (it imports Triton)."""
    try:
        from . import dselect_triton
    except ImportError as exc:
        raise ValueError(f"impl: 'triton' needs the triton package (pip install triton); importing it failed: {exc}") \
            from exc
    return dselect_triton


def _selectors_reference(s: torch.Tensor, num_experts: int) -> torch.Tensor:
    """The reference layer's formulation: a product over a ``(..., k, n, m)`` tensor. Kept for benchmarks."""
    codes = torch.as_tensor(spec.binary_codes(num_experts), dtype=torch.bool, device=s.device)  # (n, m)
    s = s.unsqueeze(-2)  # (..., k, 1, m)
    return torch.where(codes, s, 1 - s).prod(dim=-1)  # (..., k, n)


def _check_dselect_k(z_logits, w_logits, num_experts, gamma) -> tuple[int, float]:
    num_experts = spec.check_num_experts(num_experts)
    gamma = spec.check_gamma(gamma)
    _check_input("z_logits", z_logits, 2, "(..., k, m)")
    spec.check_last_dim("z_logits", z_logits.shape, spec.num_code_bits(num_experts))
    if w_logits is not None:
        _check_input("w_logits", w_logits)
        spec.check_same_shape("w_logits", w_logits.shape, z_logits.shape[:-1], "z_logits without its last axis")
    return num_experts, gamma


def dselect_k_selectors(z_logits: torch.Tensor, num_experts: int, gamma: float = 1.0) -> torch.Tensor:
    """``z_logits (..., k, m) -> r (..., k, n)``: each selector's distribution over experts."""
    num_experts, gamma = _check_dselect_k(z_logits, None, num_experts, gamma)
    return _selectors_bitwise(smooth_step(z_logits, gamma), num_experts)


def dselect_k_weights(
    z_logits: torch.Tensor, w_logits: torch.Tensor, num_experts: int, gamma: float = 1.0, impl: str = "auto"
) -> torch.Tensor:
    """``z_logits (..., k, m)``, ``w_logits (..., k) -> q (..., n)``: ``q = sum_i softmax(w)_i r(z_i)``.

    ``impl``: ``"factorized"`` (never builds the ``(..., k, n)`` selectors: one batched product of their high-bit
    and low-bit halves, see ``_weights_factorized``), ``"bitwise"`` (builds ``(..., k, n)`` bit by bit),
    ``"reference"`` (the reference layer's ``(..., k, n, m)`` product, for comparison only), ``"triton"`` (two
    fused Triton kernels, forward and backward, on CUDA tensors: ``gates.dselect_triton``); ``"auto"`` is
    ``"factorized"``. All but ``"triton"`` are plain autograd.
    """
    num_experts, gamma = _check_dselect_k(z_logits, w_logits, num_experts, gamma)
    spec.check_impl("dselect_k", impl, "torch")
    dtype = z_logits.dtype
    if dtype in (torch.bfloat16, torch.float16):  # half-precision inputs: compute and accumulate in float32
        return dselect_k_weights(z_logits.float(), w_logits.float(), num_experts, gamma, impl).to(dtype)
    if impl == "triton":
        return _triton_kernels().dselect_k_weights_triton(z_logits, w_logits, num_experts, gamma)
    s = smooth_step(z_logits, gamma)  # (..., k, m)
    alpha = torch.softmax(w_logits, dim=-1)  # (..., k)
    if impl in ("auto", "factorized"):
        return _weights_factorized(s, alpha, num_experts)  # (..., n)
    r = _selectors_bitwise(s, num_experts) if impl == "bitwise" else _selectors_reference(s, num_experts)
    return torch.einsum("...k,...kn->...n", alpha, r)  # (..., n)


def dselect_k_entropy(z_logits: torch.Tensor, num_experts: int, gamma: float = 1.0) -> torch.Tensor:
    """Sum over selectors of ``H(r) = -sum_e r_e log(r_e + 1e-6)``: ``(..., k, m) -> (...)``."""
    return _entropy(dselect_k_selectors(z_logits, num_experts, gamma))


def _entropy(r: torch.Tensor) -> torch.Tensor:
    return -(r * torch.log(r + spec.ENTROPY_EPS)).sum(dim=(-2, -1))  # r (..., k, n) -> (...)


def dselect_k_unreachable_penalty(z_logits: torch.Tensor, num_experts: int, gamma: float = 1.0) -> torch.Tensor:
    """Sum over selectors of ``1 / sum_{e<n} r_e``: ``(..., k, m) -> (...)``."""
    return _unreachable_penalty(dselect_k_selectors(z_logits, num_experts, gamma))


def _unreachable_penalty(r: torch.Tensor) -> torch.Tensor:
    return (1.0 / r.sum(dim=-1)).sum(dim=-1)  # r (..., k, n) -> (...)


def hard_concrete_gates(
    log_alpha: torch.Tensor,
    u: torch.Tensor | None = None,
    beta: float = spec.HARD_CONCRETE_BETA,
    limits: tuple[float, float] = spec.HARD_CONCRETE_LIMITS,
    *,
    check_u: bool = True,
) -> torch.Tensor:
    """``(..., n) -> (..., n)`` in [0, 1]. ``u=None``: deterministic test-time gate; else ``u`` is the uniform noise.

    ``check_u=False`` skips the range check of ``u``, which reads its values (a host sync on a GPU); the modules
    skip it for the noise they draw themselves."""
    beta = spec.check_positive("beta", beta)
    lo, hi = spec.check_limits(limits)
    _check_input("log_alpha", log_alpha, 1, "(..., n)")
    if u is None:
        s = torch.sigmoid(log_alpha)
    else:
        _check_input("u", u)
        spec.check_same_shape("u", u.shape, log_alpha.shape, "log_alpha")
        if check_u and u.numel():  # an empty batch has no values to check
            spec.check_unit_interval_open("u", float(u.detach().min()), float(u.detach().max()))
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / beta)
    return torch.clamp(s * (hi - lo) + lo, 0.0, 1.0)


def hard_concrete_weights(gates: torch.Tensor) -> torch.Tensor:
    """``q = z / sum(z)``; an all-zero row stays all-zero."""
    total = gates.sum(dim=-1, keepdim=True)
    return gates / torch.where(total == 0, torch.ones_like(total), total)


def hard_concrete_l0(
    log_alpha: torch.Tensor,
    beta: float = spec.HARD_CONCRETE_BETA,
    limits: tuple[float, float] = spec.HARD_CONCRETE_LIMITS,
) -> torch.Tensor:
    """Expected number of non-zero gates, ``(..., n) -> (...)``."""
    beta = spec.check_positive("beta", beta)
    lo, hi = spec.check_limits(limits)
    return torch.sigmoid(log_alpha - beta * float(np.log(-lo / hi))).sum(dim=-1)


def load_balance_cv2(weights: torch.Tensor) -> torch.Tensor:
    """CV^2 of per-expert importance (weights summed over the batch), population variance."""
    importance = weights.reshape(-1, weights.shape[-1]).sum(dim=0)  # (n,)
    return importance.var(correction=0) / (importance.mean() ** 2 + spec.CV_EPS)


# --------------------------------------------------------------------------------------------------------------
# Modules.
# --------------------------------------------------------------------------------------------------------------
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


class Gate(nn.Module):
    """A gate built by ``make_gate``: owns parameters (``gate.params``), computes through ``gates.recipe``.

    ``gate()`` (static) or ``gate(x)`` (per-example, ``x (b, p)``) returns the expert weights ``(n,)`` or ``(b, n)``.
    In training mode the call also sets ``gate.regularization_loss`` (a scalar tensor; 0 in eval mode).
    ``noise``: Top-k's standard normal noise or hard concrete's uniform ``u`` for a training sample; drawn from
    the torch generator when omitted. A given ``u`` is checked to lie in (0, 1), which reads its values (a host
    sync on a GPU); ``check_noise=False`` skips that for noise already checked (the harness checks its once).
    """

    def __init__(
        self,
        config: spec.GateConfig,
        dtype: str = "float32",
        device: Any = None,
        seed: Any = 0,
        impl: str = "auto",
    ):
        super().__init__()
        self.config = config
        self.impl = spec.check_impl(config.name, impl, "torch")
        self.dtype = _DTYPES[spec.check_dtype(dtype)]
        self._param_names = tuple(config.param_shapes())
        for key, value in config.init_params(seed).items():
            self.register_parameter(key, nn.Parameter(torch.as_tensor(value, dtype=self.dtype, device=device)))
        for key, value in config.init_state().items():  # non-trainable state (sigmoid_topk, ReMoE): buffers
            self.register_buffer(key, torch.as_tensor(value, dtype=self.dtype, device=device))
        self.regularization_loss = torch.zeros((), dtype=self.dtype, device=device)
        self.training_calls = 0  # training calls so far, counted for a DSelect-k entropy_schedule

    # --- parameters as NumPy -------------------------------------------------------------------------------
    def get_numpy_params(self) -> dict[str, np.ndarray]:
        return {key: p.detach().cpu().to(torch.float64).numpy() for key, p in self.named_parameters()}

    @torch.no_grad()
    def set_numpy_params(self, params: dict[str, np.ndarray]) -> None:
        for key, value in self.config.check_params(params).items():
            getattr(self, key).copy_(torch.as_tensor(value, dtype=self.dtype))

    @property
    def params(self) -> dict[str, nn.Parameter]:
        """The parameters by name (``GateConfig.param_shapes``), as the recipe reads them."""
        return {key: getattr(self, key) for key in self._param_names}

    # --- non-trainable state: sigmoid_topk's expert_bias, ReMoE's l1_coef ------------------------------------
    @property
    def state(self) -> dict[str, torch.Tensor]:
        """The state by name (``GateConfig.state_shapes``; empty for gates without one): buffers, not parameters."""
        return {key: getattr(self, key) for key in self.config.state_shapes()}

    def get_numpy_state(self) -> dict[str, np.ndarray]:
        return {key: v.detach().cpu().to(torch.float64).numpy() for key, v in self.state.items()}

    @torch.no_grad()
    def set_numpy_state(self, state: dict[str, np.ndarray]) -> None:
        for key, value in self.config.check_state(state).items():
            getattr(self, key).copy_(torch.as_tensor(value, dtype=self.dtype))

    @torch.no_grad()
    def update_bias(self, weights_or_counts: torch.Tensor) -> None:
        """sigmoid_topk's balancing step, once per training step: ``expert_bias += bias_rate sign(mean_load -
        load)``. ``weights_or_counts``: weights ``(b, n)`` (a token counts for each expert it has a non-zero
        weight on) or the tokens per expert ``(n,)``."""
        if self.config.name != "sigmoid_topk":
            raise ValueError(f"gate: expected a sigmoid_topk gate for update_bias; got {self.config.name!r}")
        load = _load_of(weights_or_counts, self.config.num_experts)
        h = self.config.hparams
        self.expert_bias.copy_(sigmoid_topk_bias_step(self.expert_bias, load, h["bias_rate"], h["bias_centered"]))

    @torch.no_grad()
    def update_l1_coef(self, weights: torch.Tensor) -> None:
        """ReMoE's coefficient step, once per training step: ``l1_coef *= l1_alpha^sign(target - sparsity)``,
        ``sparsity`` the fraction of zero entries of ``weights (..., n)``."""
        if self.config.name != "remoe":
            raise ValueError(f"gate: expected a remoe gate for update_l1_coef; got {self.config.name!r}")
        weights = torch.as_tensor(weights)
        spec.check_last_dim("weights", weights.shape, self.config.num_experts)
        new = remoe_l1_step(self.l1_coef, remoe_sparsity(weights), self.config.hparams["l1_alpha"],
                            self.config.target_sparsity)
        self.l1_coef.copy_(new)

    # --- forward: gates.recipe ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor | None = None, *, noise: torch.Tensor | None = None,
                check_noise: bool = True) -> torch.Tensor:
        x, noise = self._inputs(x, noise)
        self.config.check_call(None if x is None else x.shape, None if noise is None else noise.shape)
        calls = None
        if self.training and self.config.hparams.get("entropy_schedule") is not None:
            self.training_calls += 1
            calls = self.training_calls
        q, self.regularization_loss = recipe.gate_forward(
            _CORE, self.config, self.params, x, training=self.training, noise=noise, impl=self.impl,
            check_noise=check_noise, calls=calls, state=self.state,
        )
        return q

    def _inputs(self, x: Any, noise: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``x`` and ``noise`` checked (floating-point tensors on the gate's device; type, dtype and device only,
        no values read) and cast to the gate's dtype, as Keras casts a layer's floating inputs."""
        device = next(iter(self.parameters())).device
        out = []
        for name, t in (("x", x), ("noise", noise)):
            if t is not None:
                _check_input(name, t)
                if t.device != device:
                    raise ValueError(f"{name}: expected a tensor on the gate's device {device}; got one on {t.device}")
                t = t.to(self.dtype)
            out.append(t)
        return out[0], out[1]

    @torch.no_grad()
    def support(self, x: torch.Tensor | None = None) -> np.ndarray:
        """Experts with non-zero test-time weight: bool ``(n,)`` static, ``(b, n)`` per-example."""
        was_training = self.training
        self.eval()
        try:
            q = self(x)
        finally:
            self.train(was_training)
        return (q > 0).cpu().numpy()

    def extra_repr(self) -> str:
        c = self.config
        return f"name={c.name!r}, num_experts={c.num_experts}, k={c.k}, input_dim={c.input_dim}, hparams={c.hparams}"


def _load_of(weights_or_counts: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Tokens per expert ``(n,)`` from weights ``(b, n)`` (``expert_load``) or the counts themselves ``(n,)``."""
    t = torch.as_tensor(weights_or_counts)
    if t.dim() not in (1, 2) or t.shape[-1] != num_experts:
        raise ValueError(f"weights_or_counts: expected weights (batch, {num_experts}) or counts ({num_experts},); "
                         f"got shape {tuple(t.shape)}")
    return expert_load(t) if t.dim() == 2 else t.detach().to(torch.float64)


def _uniform_noise(like: torch.Tensor) -> torch.Tensor:
    eps = spec.HARD_CONCRETE_EPS
    return torch.rand_like(like) * (1 - 2 * eps) + eps


def _heads(x: torch.Tensor, heads: list[tuple[torch.Tensor, torch.Tensor | None]]) -> list[torch.Tensor]:
    """``[x @ kernel + bias for (kernel, bias) in heads]``; several heads are one matmul with the kernels side by
    side, so ``x`` is read once (forward and backward) instead of once per head. ``bias=None``: none."""
    if len(heads) == 1:
        kernel, bias = heads[0]
        out = x @ kernel
        return [out + bias if bias is not None else out]
    kernels = [kernel for kernel, _ in heads]
    outs = (x @ torch.cat(kernels, dim=1)).split([kr.shape[1] for kr in kernels], dim=-1)
    return [out + bias if bias is not None else out for out, (_, bias) in zip(outs, heads, strict=True)]


OPS = recipe.Ops(
    read=lambda param: param,
    heads=_heads,
    reshape=torch.reshape,
    softplus=nn.functional.softplus,
    sigmoid=torch.sigmoid,
    zero=lambda like: torch.zeros((), dtype=like.dtype, device=like.device),
    normal=torch.randn_like,
    uniform=_uniform_noise,
    mean=torch.mean,
    sum=torch.sum,
    row_sum=lambda t: t.sum(dim=-1, keepdim=True),
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
    device: Any = None,
    seed: Any = 0,
    impl: str = "auto",
    **hparams: Any,
) -> Gate:
    """Build a gate module. ``input_dim=None``: static (task-only) gate; else per-example on ``x (b, input_dim)``.

    ``seed`` (an int or ``np.random.Generator``) draws the initial parameters in NumPy, so the TensorFlow gate
    built with the same arguments starts from the same numbers. ``impl`` picks the DSelect-k implementation (see
    ``dselect_k_weights``); other gates have one, ``"auto"``.
    """
    config = spec.make_config(name, num_experts, k, input_dim, **hparams)
    return Gate(config, dtype=dtype, device=_check_device(device), seed=seed, impl=impl)


def _check_device(device: Any) -> torch.device | None:
    """``device`` as a ``torch.device`` that exists here (one empty tensor is made on it), or ``None``."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError, TypeError, ValueError) as exc:
        available = ["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count())), "meta"]
        raise spec.device_error(device, available, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) \
            from None
    return dev
