"""DSelect-k as one autograd function with an analytic backward (PyTorch).

Forward: ``q = sum_i alpha_i r_i`` with ``r_i = kron_j [1 - s_ij, s_ij]`` (most significant bit first), built bit by
bit with ``alpha_i`` folded into the first factor, so only ``(B, k, N)`` is ever built (never ``(B, k, N, m)``).

Backward, for the upstream gradient ``G = dL/dq`` (zero-padded to ``N = 2^m``): write ``R_i = <G, r_i>``. With suffix
contractions ``C_j = G contracted with f_{m-1} .. f_j`` (shape ``(B, k, 2^j)``, ``C_0 = R``) and prefix products
``P_j = kron_{l<j} f_l`` (shape ``(B, k, 2^j)``),

    dR_i / ds_ij = sum_p P_j[p] (C_{j+1}[p, 1] - C_{j+1}[p, 0]),

so the whole backward costs ``O(B k N)``, like the forward. Then ``dL/dz = alpha dR/ds * S'(z)`` and
``dL/dw = alpha (R - sum_i alpha_i R_i)``. Nothing of the forward is saved but ``z`` and ``w``: the selectors are
recomputed, which keeps peak memory at one ``(B, k, N)`` tensor and a few of half that size.

Half-precision inputs are computed in float32 and the results cast back.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


def _smooth_step_and_slope(z: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    half = gamma / 2
    inside = (z > -half) & (z < half)
    poly = (-2.0 / gamma**3) * z**3 + (1.5 / gamma) * z + 0.5
    s = torch.where(z <= -half, 0.0, torch.where(z >= half, 1.0, poly))  # NaN stays NaN
    slope = torch.where(inside, (-6.0 / gamma**3) * z * z + 1.5 / gamma, torch.zeros_like(z))
    return s, slope


def _kron_bits(first: torch.Tensor, s: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Extend ``first (B, k, L)`` by the bits ``s[..., start:stop]``: ``(B, k, L * 2^(stop - start))``."""
    r = first
    for j in range(start, stop):
        sj = s[..., j : j + 1]  # (B, k, 1)
        r = torch.stack([r * (1 - sj), r * sj], dim=-1).flatten(-2)
    return r


class _DSelectK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, w: torch.Tensor, num_experts: int, gamma: float) -> torch.Tensor:
        # z (B, k, m), w (B, k)
        s, _ = _smooth_step_and_slope(z, gamma)
        alpha = torch.softmax(w, dim=-1)  # (B, k)
        s0 = s[..., 0:1]
        first = alpha.unsqueeze(-1) * torch.cat([1 - s0, s0], dim=-1)  # (B, k, 2)
        r = _kron_bits(first, s, 1, s.shape[-1])  # (B, k, N), alpha_i r_i
        q = r[..., :num_experts].sum(dim=-2)  # (B, n)
        ctx.save_for_backward(z, w)
        ctx.num_experts, ctx.gamma = num_experts, gamma
        return q

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_q: torch.Tensor):
        z, w = ctx.saved_tensors
        n, gamma = ctx.num_experts, ctx.gamma
        s, slope = _smooth_step_and_slope(z, gamma)  # (B, k, m)
        alpha = torch.softmax(w, dim=-1)  # (B, k)
        batch, k, m = s.shape
        big_n = 1 << m
        g = torch.nn.functional.pad(grad_q, (0, big_n - n)) if big_n != n else grad_q  # (B, N)
        # Suffix contractions, least significant bit first; keep the differences C[., 1] - C[., 0].
        diffs: list[torch.Tensor] = [None] * m  # diffs[j]: (B, k, 2^j) or (B, 1, 2^j) for j = m - 1
        c = g.unsqueeze(-2)  # (B, 1, N)
        for j in range(m - 1, -1, -1):
            pairs = c.unflatten(-1, (-1, 2))  # (B, k|1, 2^j, 2)
            c0, c1 = pairs[..., 0], pairs[..., 1]
            diffs[j] = c1 - c0
            sj = s[..., j : j + 1]  # (B, k, 1)
            c = c0 + sj * (c1 - c0)  # (B, k, 2^j): c0 (1 - s) + c1 s
        big_r = c.squeeze(-1)  # (B, k): R_i = <G, r_i>
        # Prefix products, most significant bit first.
        grad_s = torch.empty_like(s)
        prefix = torch.ones((batch, k, 1), dtype=s.dtype, device=s.device)
        for j in range(m):
            grad_s[..., j] = (prefix * diffs[j]).sum(dim=-1)
            if j + 1 < m:
                sj = s[..., j : j + 1]
                prefix = torch.stack([prefix * (1 - sj), prefix * sj], dim=-1).flatten(-2)
        grad_z = alpha.unsqueeze(-1) * grad_s * slope
        grad_w = alpha * (big_r - (alpha * big_r).sum(dim=-1, keepdim=True))
        return grad_z, grad_w, None, None


def dselect_k_fused(
    z_logits: torch.Tensor, w_logits: torch.Tensor, num_experts: int, gamma: float
) -> torch.Tensor:
    """``z_logits (..., k, m)``, ``w_logits (..., k) -> (..., n)``; arguments already checked by the caller."""
    lead = z_logits.shape[:-2]
    k, m = z_logits.shape[-2:]
    out_dtype = torch.promote_types(z_logits.dtype, w_logits.dtype)
    compute = out_dtype if out_dtype in (torch.float32, torch.float64) else torch.float32
    z = z_logits.reshape(-1, k, m).to(compute)
    w = w_logits.reshape(-1, k).to(compute)
    q = _DSelectK.apply(z, w, num_experts, gamma)
    return q.reshape(*lead, num_experts).to(out_dtype)
