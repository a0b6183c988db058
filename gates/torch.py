"""PyTorch gates: the functional core and ``make_gate`` modules. Reads line by line against ``gates/tf.py``.

Shapes: ``b`` batch, ``p`` routing-input width, ``n`` experts, ``k`` selectors, ``m = ceil(log2 n)``, ``N = 2^m``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from . import spec

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
    "make_gate",
    "Gate",
    "DSELECT_K_IMPLS",
]

DSELECT_K_IMPLS = spec.DSELECT_K_IMPLS  # "triton" needs the triton package and CUDA tensors


def softmax_weights(logits: torch.Tensor) -> torch.Tensor:
    """``(..., n) -> (..., n)``: ``softmax(l)``."""
    spec.check_min_rank("logits", logits.shape, 1, "(..., n)")
    return torch.softmax(logits, dim=-1)


def topk_weights(logits: torch.Tensor, k: int) -> torch.Tensor:
    """``(..., n) -> (..., n)``: softmax over the ``k`` largest logits, exact zeros elsewhere.

    Ties at the k-th value go to the lower expert index. A row with a NaN logit gives a NaN row.
    """
    spec.check_min_rank("logits", logits.shape, 1, "(..., n)")
    k = spec.check_k(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    above = logits > kth  # (..., n)
    tied = logits == kth  # (..., n)
    need = k - above.sum(dim=-1, keepdim=True)  # (..., 1): how many tied logits to keep
    mask = above | (tied & (tied.cumsum(dim=-1) <= need))  # (..., n), exactly k True per finite row
    q = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.where(torch.isnan(logits).any(dim=-1, keepdim=True), torch.nan, q)


def smooth_step(t: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Cubic smooth-step: exactly 0 below ``-gamma/2`` and 1 above ``gamma/2`` (zero gradient there)."""
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
    gamma = spec.check_positive("gamma", gamma)
    spec.check_min_rank("z_logits", z_logits.shape, 2, "(..., k, m)")
    spec.check_last_dim("z_logits", z_logits.shape, spec.num_code_bits(num_experts))
    if w_logits is not None:
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
    spec.check_min_rank("log_alpha", log_alpha.shape, 1, "(..., n)")
    if u is None:
        s = torch.sigmoid(log_alpha)
    else:
        spec.check_same_shape("u", u.shape, log_alpha.shape, "log_alpha")
        if check_u:
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
    """A gate built by ``make_gate``: owns parameters, calls the functional core.

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
        for key, value in config.init_params(seed).items():
            self.register_parameter(key, nn.Parameter(torch.as_tensor(value, dtype=self.dtype, device=device)))
        self.regularization_loss = torch.zeros((), dtype=self.dtype, device=device)

    # --- parameters as NumPy -------------------------------------------------------------------------------
    def get_numpy_params(self) -> dict[str, np.ndarray]:
        return {key: p.detach().cpu().to(torch.float64).numpy() for key, p in self.named_parameters()}

    @torch.no_grad()
    def set_numpy_params(self, params: dict[str, np.ndarray]) -> None:
        for key, value in self.config.check_params(params).items():
            getattr(self, key).copy_(torch.as_tensor(value, dtype=self.dtype))

    # --- forward ---------------------------------------------------------------------------------------------
    def _affine(self, x: torch.Tensor | None, kernel: str, bias: str | None, static: str) -> torch.Tensor:
        if x is None:
            return getattr(self, static)
        out = x @ getattr(self, kernel)
        return out + getattr(self, bias) if bias else out

    def _affines(self, x: torch.Tensor, *heads: tuple[str, str | None]) -> list[torch.Tensor]:
        """``[x @ kernel + bias for (kernel, bias) in heads]`` as one matmul with the kernels side by side: ``x``
        is read once (forward and backward) instead of once per head. Biases are added per head (None: none)."""
        kernels = [getattr(self, kernel) for kernel, _ in heads]
        outs = (x @ torch.cat(kernels, dim=1)).split([kr.shape[1] for kr in kernels], dim=-1)
        return [out + getattr(self, bias) if bias else out for out, (_, bias) in zip(outs, heads, strict=True)]

    def forward(self, x: torch.Tensor | None = None, *, noise: torch.Tensor | None = None,
                check_noise: bool = True) -> torch.Tensor:
        self.config.check_call(None if x is None else x.shape, None if noise is None else noise.shape)
        cfg, h, training = self.config, self.config.hparams, self.training
        reg = torch.zeros((), dtype=self.dtype, device=self.regularization_loss.device)
        n, k = cfg.num_experts, cfg.k
        if cfg.name == "dselect_k":
            if x is None:
                z, w = self.z_logits, self.w_logits  # (k, m), (k,)
            else:
                z, w = self._affines(x, ("z_kernel", "z_bias"), ("w_kernel", "w_bias"))
                z = z.reshape(-1, k, cfg.num_bits)  # (b, k, m), w (b, k)
            q = dselect_k_weights(z, w, n, h["gamma"], impl=self.impl)
            entropy, unreachable = training and h["entropy_reg"] > 0, training and not spec.is_power_of_two(n)
            if entropy or unreachable:
                r = dselect_k_selectors(z, n, h["gamma"])  # (..., k, n), built once for both regularisers
                if entropy:
                    reg = reg + h["entropy_reg"] * _entropy(r).mean()
                if unreachable:
                    reg = reg + _unreachable_penalty(r).mean()
        elif cfg.name == "hard_concrete":
            la = self._affine(x, "kernel", "bias", "log_alpha")  # (b, n) or (n,)
            u = None
            if training:
                u = noise if noise is not None else _uniform_noise(la)
            check_u = noise is not None and check_noise
            q = hard_concrete_weights(hard_concrete_gates(la, u, h["beta"], h["limits"], check_u=check_u))
            if training and h["l0_reg"] > 0:
                reg = reg + h["l0_reg"] * hard_concrete_l0(la, h["beta"], h["limits"]).mean()
        else:
            noisy = cfg.name == "topk" and training and h["noisy"]
            if noisy and x is not None:
                logits, noise_l = self._affines(x, ("kernel", "bias"), ("noise_kernel", None))  # (b, n) each
            else:
                logits = self._affine(x, "kernel", "bias", "logits")  # (b, n) or (n,)
                noise_l = self.noise_logits if noisy else None
            if cfg.name == "softmax":
                q = softmax_weights(logits)
            else:
                if noisy:
                    eps = noise if noise is not None else torch.randn_like(logits)
                    logits = logits + eps * nn.functional.softplus(noise_l)
                q = topk_weights(logits, k)
                if training and h["load_balance"] > 0:
                    reg = reg + h["load_balance"] * load_balance_cv2(q)
        self.regularization_loss = reg
        return q

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


def _uniform_noise(like: torch.Tensor) -> torch.Tensor:
    eps = spec.HARD_CONCRETE_EPS
    return torch.rand_like(like) * (1 - 2 * eps) + eps


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
    return Gate(config, dtype=dtype, device=device, seed=seed, impl=impl)
