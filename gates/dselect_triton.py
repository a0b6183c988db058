"""DSelect-k weights as two fused Triton kernels (PyTorch, CUDA): ``impl="triton"``.

Everything after the projection, ``(z_logits (B, k, m), w_logits (B, k)) -> q (B, n)``, is one pass forward and
one pass backward. Each program owns ``BLOCK_B`` rows and walks the experts in chunks of ``BLOCK_N``; a selector's
distribution over a chunk, ``r_i[e] = prod_j (s_ij if bit_j(e) else 1 - s_ij)``, is built in registers from the
row's ``m`` smooth-stepped bits and never written out. Memory traffic is the floor of the computation: read
``z`` and ``w``, write ``q`` (forward); read ``z``, ``w`` and ``dq``, write ``dz`` and ``dw`` (backward).

Backward, for the row's ``alpha = softmax(w)``:

* ``dalpha_i = sum_e dq[e] r_i[e]``, then the softmax backward ``dw = alpha * (dalpha - <alpha, dalpha>)``;
* ``ds_ij = sum_e dq[e] (+1 if bit_j(e) else -1) prod_{l != j} f_il[e]``. With ``t = dq * r_i``, the experts whose
  bit ``j`` is set all carry the factor ``s_ij`` and the others ``1 - s_ij``, so ``ds_ij = ones_ij / s_ij -
  zeros_ij / (1 - s_ij)`` where ``ones_ij`` and ``zeros_ij`` are the sums of ``t`` over either set: O(m) work per
  expert, not the O(m^2) of recomputing every product without one factor. Each quotient divides a sum by the very
  factor each of its terms holds, so it is accurate to rounding however small the factor (short of underflow). A
  factor of exactly 0 or 1 is a saturated bit, whose slope (below) is 0, so its quotient is taken as 0, not
  0 / 0; or, rarely, a bit within rounding of a band edge with a small non-zero slope: the programs holding one
  recompute it the O(m^2) way (``_ds_by_products``);
* ``dz_ij = alpha_i ds_ij smooth_step'(z_ij)``, zero outside ``(-gamma/2, gamma/2)`` as in autograd of ``smooth_step``.

Half-precision inputs are computed in float32 (as every DSelect-k implementation here); float64 stays float64.
No second derivative. With ``TRITON_INTERPRET=1`` set before this module is imported, Triton's interpreter runs
the same kernels on CPU tensors: that is how the CPU-only test suite checks them against the NumPy reference.

Importing this module imports PyTorch and Triton; ``gates.torch`` imports it only when the Triton path is used.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
import triton
import triton.language as tl

from . import spec

__all__ = ["KERNELS", "dselect_k_weights_triton", "interpreted", "kernel_launch", "launch_config"]

MAX_BLOCK_N = 256  # experts per chunk; more experts loop over chunks
# Rows x experts per program, at most, and warps per program. Chosen from ptxas's register counts for sm_90
# (scripts/triton_resources.py, no GPU needed, results in docs/results/triton_resources_sm90.json): 512-element
# tiles keep the kernels of the kernels suite's shapes at 150 registers or fewer, without spills except 20 bytes in
# the backward at n=512; 2048-element tiles spilled in the backward. Not tuned on hardware.
TILE = {"fwd": 512, "bwd": 512}
NUM_WARPS = 4  # at most; a tile under 512 elements gets one warp per 128
MIN_PROGRAMS = 512  # shrink BLOCK_B until the grid has about this many programs (a few waves on 132 SMs)


_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"  # read by triton.jit when the kernels are defined


def interpreted() -> bool:
    """True when the kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1`` at import time)."""
    return _INTERPRETED


@triton.jit
def _smooth_step(z, half_gamma, c3, c1):
    """Cubic smooth-step of ``gates.torch.smooth_step``: ``c3 t^3 + c1 t + 1/2``, clamped to exactly 0 and 1."""
    poly = (c3 * z * z + c1) * z + 0.5
    return tl.where(z <= -half_gamma, 0.0, tl.where(z >= half_gamma, 1.0, poly))


@triton.jit
def _load_constants(consts_ptr, ACC: tl.constexpr):
    """``(gamma / 2, c3, c1)`` in the accumulation dtype (a float argument would be float32)."""
    return tl.load(consts_ptr).to(ACC), tl.load(consts_ptr + 1).to(ACC), tl.load(consts_ptr + 2).to(ACC)


@triton.jit
def _softmax_rows(w_ptr, stride_wb, rows, rmask, K: tl.constexpr, KP: tl.constexpr, ACC: tl.constexpr):
    """``softmax(w)`` of the rows, a ``(BLOCK_B, KP)`` tile (columns from ``K`` on are 0)."""
    cols = tl.arange(0, KP)
    cmask = cols < K
    w = tl.load(w_ptr + rows[:, None] * stride_wb + cols[None, :], mask=rmask[:, None] & cmask[None, :],
                other=0.0).to(ACC)
    w = tl.where(cmask[None, :], w, -float("inf"))
    e = tl.exp(w - tl.max(w, axis=1)[:, None])
    return e / tl.sum(e, axis=1)[:, None]


@triton.jit
def _program_rows(w_ptr, stride_wb, stride_zb, B, K: tl.constexpr, KP: tl.constexpr, BLOCK_B: tl.constexpr,
                  ACC: tl.constexpr):
    """This program's rows (int64), their mask, their offsets into ``z``, the ``k`` column indices and
    ``alpha = softmax(w)`` of the rows, ``(BLOCK_B, KP)``."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    rmask = rows < B
    rows = rows.to(tl.int64)
    alpha = _softmax_rows(w_ptr, stride_wb, rows, rmask, K, KP, ACC)
    return rows, rmask, rows * stride_zb, tl.arange(0, KP), alpha


@triton.jit
def _column(tile, cols, i):
    """Column ``i`` of a ``(BLOCK_B, C)`` tile as a ``(BLOCK_B,)`` vector."""
    return tl.sum(tl.where(cols[None, :] == i, tile, 0.0), axis=1)


@triton.jit
def _factor(z_ptr, zrow, stride_zk, rmask, i, j, e, half_gamma, c3, c1,
            M: tl.constexpr, ACC: tl.constexpr):
    """Bit ``j``'s factor of selector ``i`` over the chunk ``e``: ``(BLOCK_B, BLOCK_N)``, ``s`` or ``1 - s``."""
    s = _smooth_step(tl.load(z_ptr + zrow + i * stride_zk + j, mask=rmask, other=0.0).to(ACC), half_gamma, c3, c1)
    bit = ((e >> (M - 1 - j)) & 1) == 1
    return tl.where(bit[None, :], s[:, None], 1.0 - s[:, None])


@triton.jit
def _ds_by_products(z_ptr, zrow, stride_zk, dq_ptr, rows, rmask, i, half_gamma, c3, c1, N: tl.constexpr,
                    M: tl.constexpr, MP: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
                    ACC: tl.constexpr):
    """``ds_ij`` of selector ``i`` (a ``(BLOCK_B, MP)`` tile) with every product over the other bits recomputed:
    O(m^2) per expert, exact whatever the factors. The backward's fallback for a factor rounded to 0 or 1."""
    mcols = tl.arange(0, MP)
    ds = tl.zeros((BLOCK_B, MP), dtype=ACC)
    for start in range(0, N, BLOCK_N):
        e = start + tl.arange(0, BLOCK_N)
        dq = tl.load(dq_ptr + rows[:, None] * N + e[None, :], mask=rmask[:, None] & (e < N)[None, :],
                     other=0.0).to(ACC)
        for j in range(M):  # loops, not unrolled: this path is rare, and unrolled it costs every program registers
            bit = ((e >> (M - 1 - j)) & 1) == 1
            g = tl.where(bit[None, :], dq, -dq)
            for other in range(M):
                f = _factor(z_ptr, zrow, stride_zk, rmask, i, other, e, half_gamma, c3, c1, M, ACC)
                g = g * tl.where(other == j, 1.0, f)
            ds = tl.where(mcols[None, :] == j, ds + tl.sum(g, axis=1)[:, None], ds)
    return ds


@triton.jit
def _dselect_fwd(z_ptr, stride_zb, stride_zk, w_ptr, stride_wb, q_ptr, consts_ptr, B, N: tl.constexpr,
                 K: tl.constexpr, KP: tl.constexpr, M: tl.constexpr,
                 BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    rows, rmask, zrow, kcols, alpha = _program_rows(w_ptr, stride_wb, stride_zb, B, K, KP, BLOCK_B, ACC)
    half_gamma, c3, c1 = _load_constants(consts_ptr, ACC)
    for start in range(0, N, BLOCK_N):
        e = start + tl.arange(0, BLOCK_N)
        q = tl.zeros((BLOCK_B, BLOCK_N), dtype=ACC)
        for i in range(K):
            r = _column(alpha, kcols, i)[:, None] + tl.zeros((BLOCK_B, BLOCK_N), dtype=ACC)
            for j in tl.static_range(M):
                r = r * _factor(z_ptr, zrow, stride_zk, rmask, i, j, e, half_gamma, c3, c1, M, ACC)
            q += r
        mask = rmask[:, None] & (e < N)[None, :]
        tl.store(q_ptr + rows[:, None] * N + e[None, :], q.to(q_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dselect_bwd(z_ptr, stride_zb, stride_zk, w_ptr, stride_wb, dq_ptr, dz_ptr, dw_ptr, consts_ptr, B,
                 N: tl.constexpr,
                 K: tl.constexpr, KP: tl.constexpr, M: tl.constexpr, MP: tl.constexpr,
                 BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    rows, rmask, zrow, kcols, alpha = _program_rows(w_ptr, stride_wb, stride_zb, B, K, KP, BLOCK_B, ACC)
    half_gamma, c3, c1 = _load_constants(consts_ptr, ACC)
    mcols = tl.arange(0, MP)
    dalpha = tl.zeros((BLOCK_B, KP), dtype=ACC)
    for i in range(K):
        da = tl.zeros((BLOCK_B,), dtype=ACC)  # sum_e dq[e] r_i[e]
        ones = tl.zeros((BLOCK_B, MP), dtype=ACC)  # column j: sum over the experts with bit j set of dq r_i
        zeros = tl.zeros((BLOCK_B, MP), dtype=ACC)  # column j: the same over the experts with bit j clear
        for start in range(0, N, BLOCK_N):
            e = start + tl.arange(0, BLOCK_N)
            mask = rmask[:, None] & (e < N)[None, :]
            t = tl.load(dq_ptr + rows[:, None] * N + e[None, :], mask=mask, other=0.0).to(ACC)
            for j in tl.static_range(M):
                t = t * _factor(z_ptr, zrow, stride_zk, rmask, i, j, e, half_gamma, c3, c1, M, ACC)
            da += tl.sum(t, axis=1)  # t = dq * r_i
            for j in tl.static_range(M):
                bit = ((e >> (M - 1 - j)) & 1) == 1
                # both sums taken directly: one as the total minus the other would cancel when s_ij is near 0 or 1
                one = tl.sum(tl.where(bit[None, :], t, 0.0), axis=1)
                zero = tl.sum(tl.where(bit[None, :], 0.0, t), axis=1)
                ones = tl.where(mcols[None, :] == j, ones + one[:, None], ones)
                zeros = tl.where(mcols[None, :] == j, zeros + zero[:, None], zeros)
        dalpha = tl.where(kcols[None, :] == i, da[:, None], dalpha)
        # dz_ij = alpha_i ds_ij smooth_step'(z_ij); smooth_step' = 3 c3 z^2 + c1 strictly inside the band, else 0
        zmask = rmask[:, None] & (mcols < M)[None, :]
        z = tl.load(z_ptr + zrow[:, None] + i * stride_zk + mcols[None, :], mask=zmask, other=0.0).to(ACC)
        sj = _smooth_step(z, half_gamma, c3, c1)
        # ds_ij = sum_e dq[e] dr_i[e]/ds_ij = ones_j / s_ij - zeros_j / (1 - s_ij): each sum holds its factor once.
        # A factor of exactly 0 is a saturated bit (slope 0 below), whose ds is not needed: 0, not 0 / 0.
        ds = (tl.where(sj != 0.0, ones / tl.where(sj != 0.0, sj, 1.0), 0.0)
              - tl.where(sj != 1.0, zeros / tl.where(sj != 1.0, 1.0 - sj, 1.0), 0.0))
        slope = tl.where((z <= -half_gamma) | (z >= half_gamma), 0.0, 3.0 * c3 * z * z + c1)
        # Inside the band a factor can still round to exactly 0 or 1 (z within ~1e-4 of an edge in float32); its
        # slope is small but not 0, and the quotient has lost that term. Rare: those programs recompute such rows.
        rounded = zmask & ((sj == 0.0) | (sj == 1.0)) & (slope != 0.0)
        if tl.max(rounded.to(tl.int32)) > 0:
            exact = _ds_by_products(z_ptr, zrow, stride_zk, dq_ptr, rows, rmask, i, half_gamma, c3, c1,
                                    N, M, MP, BLOCK_B, BLOCK_N, ACC)
            ds = tl.where(rounded, exact, ds)
        dz = _column(alpha, kcols, i)[:, None] * ds * slope
        dzoffs = rows[:, None] * (K * M) + i * M + mcols[None, :]  # dz is contiguous
        tl.store(dz_ptr + dzoffs, dz.to(dz_ptr.dtype.element_ty), mask=zmask)
    dw = alpha * (dalpha - tl.sum(alpha * dalpha, axis=1)[:, None])
    wmask = rmask[:, None] & (kcols < K)[None, :]
    tl.store(dw_ptr + rows[:, None] * K + kcols[None, :], dw.to(dw_ptr.dtype.element_ty), mask=wmask)


KERNELS: dict[str, Any] = {"fwd": _dselect_fwd, "bwd": _dselect_bwd}  # what the autograd Function launches


def launch_config(batch: int, num_experts: int, tile: int, min_programs: int | None = None) -> tuple[int, int, int]:
    """``(BLOCK_B, BLOCK_N, programs)`` for ``batch`` rows of ``num_experts`` experts.

    ``BLOCK_N`` is the experts' padded power of two, at most ``MAX_BLOCK_N``; ``BLOCK_B`` fills a ``tile`` of
    ``BLOCK_B x BLOCK_N`` and is halved while the grid has fewer than ``min_programs`` programs (default
    ``MIN_PROGRAMS``, so that a small batch still spreads over the GPU; 1 in the interpreter, which runs programs one
    after another)."""
    if min_programs is None:
        min_programs = 1 if _INTERPRETED else MIN_PROGRAMS
    block_n = min(triton.next_power_of_2(num_experts), MAX_BLOCK_N)
    block_b = max(1, tile // block_n)
    while block_b > 1 and triton.cdiv(batch, block_b) < min_programs:
        block_b //= 2
    return block_b, block_n, triton.cdiv(batch, block_b)


def kernel_launch(kind: str, batch: int, num_experts: int, k: int, dtype: torch.dtype) -> tuple[int, dict]:
    """``(programs, meta)`` of the ``"fwd"`` or ``"bwd"`` kernel: its grid and its compile-time arguments
    (``constexpr`` values and ``num_warps``). ``scripts/triton_resources.py`` compiles the same launches ahead of
    time to read their register use."""
    block_b, block_n, programs = launch_config(batch, num_experts, TILE[kind])
    m = spec.num_code_bits(num_experts)
    meta = {"N": num_experts, "K": k, "KP": triton.next_power_of_2(k), "M": m, "BLOCK_B": block_b,
            "BLOCK_N": block_n, "ACC": tl.float64 if dtype == torch.float64 else tl.float32,
            "num_warps": max(1, min(NUM_WARPS, block_b * block_n // 128))}  # a small tile: fewer idle threads
    if kind == "bwd":
        meta["MP"] = triton.next_power_of_2(m)
    return programs, meta


@functools.lru_cache(maxsize=64)
def _constants(gamma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[gamma / 2, c3, c1]`` of the smooth-step ``c3 t^3 + c1 t + 1/2``, as a tensor on ``device``: made once per
    ``(gamma, dtype, device)``, since a fresh host-to-device copy on every call would wait for the GPU."""
    return torch.tensor([gamma / 2, -2.0 / gamma**3, 1.5 / gamma], dtype=dtype, device=device)


class _DSelectK(torch.autograd.Function):
    """``(z (B, k, m), w (B, k)) -> q (B, n)`` with the fused backward; float32 or float64, rows strided, each row
    contiguous."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, w: torch.Tensor, num_experts: int, gamma: float) -> torch.Tensor:
        batch, k, m = z.shape
        q = torch.empty((batch, num_experts), dtype=z.dtype, device=z.device)
        if batch:
            programs, meta = kernel_launch("fwd", batch, num_experts, k, z.dtype)
            KERNELS["fwd"][(programs,)](
                z, z.stride(0), z.stride(1), w, w.stride(0), q, _constants(gamma, z.dtype, z.device), batch, **meta
            )
        ctx.save_for_backward(z, w)
        ctx.num_experts, ctx.gamma = num_experts, gamma
        return q

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dq: torch.Tensor):
        z, w = ctx.saved_tensors
        batch, k, m = z.shape
        dq = dq.contiguous().to(z.dtype)
        dz = torch.empty(z.shape, dtype=z.dtype, device=z.device)  # contiguous, whatever z's strides
        dw = torch.empty(w.shape, dtype=w.dtype, device=w.device)
        if batch:
            programs, meta = kernel_launch("bwd", batch, ctx.num_experts, k, z.dtype)
            KERNELS["bwd"][(programs,)](
                z, z.stride(0), z.stride(1), w, w.stride(0), dq, dz, dw, _constants(ctx.gamma, z.dtype, z.device),
                batch, **meta
            )
        return dz, dw, None, None


def dselect_k_weights_triton(z_logits: torch.Tensor, w_logits: torch.Tensor, num_experts: int,
                             gamma: float) -> torch.Tensor:
    """``z_logits (..., k, m)``, ``w_logits (..., k) -> q (..., n)`` by the fused kernels.

    Arguments are checked by the caller (``gates.torch.dselect_k_weights``) except where they live: CUDA tensors
    (or CPU tensors under ``TRITON_INTERPRET=1``), both on one device."""
    for name, t in (("z_logits", z_logits), ("w_logits", w_logits)):
        if not (t.is_cuda or (_INTERPRETED and t.device.type == "cpu")):
            raise ValueError(
                f"{name}: impl 'triton' runs on CUDA tensors (or on the CPU in Triton's interpreter, "
                f"TRITON_INTERPRET=1 when gates.dselect_triton is first imported); got a tensor on {t.device}"
            )
    if w_logits.device != z_logits.device:
        raise ValueError(f"w_logits: expected a tensor on {z_logits.device} like z_logits; got {w_logits.device}")
    *lead, k, m = z_logits.shape
    if m != spec.num_code_bits(num_experts):  # checked by the caller too; the kernels rely on it
        raise ValueError(f"z_logits: expected last axis {spec.num_code_bits(num_experts)}; got {m}")
    # Rows may be strided (z and w as column slices of one projection ``x @ [W_z | W_w]``); within a row the
    # kernels want unit stride along m and k.
    z = z_logits.reshape(-1, k, m)
    if z.stride(2) != 1:
        z = z.contiguous()
    w = w_logits.reshape(-1, k)
    if w.stride(1) != 1:
        w = w.contiguous()
    if z.is_cuda:
        with torch.cuda.device(z.device):
            q = _DSelectK.apply(z, w, num_experts, float(gamma))
    else:
        q = _DSelectK.apply(z, w, num_experts, float(gamma))
    return q.reshape(*lead, num_experts)
