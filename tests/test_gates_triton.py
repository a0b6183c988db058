"""DSelect-k's fused Triton kernels (``impl="triton"``) against the NumPy float64 reference and finite differences.

Without CUDA the kernels run in Triton's CPU interpreter (``conftest.py`` sets ``TRITON_INTERPRET=1``): the same
kernel code, with NumPy semantics for the arithmetic. ``tests/test_gpu.py`` runs them compiled on a GPU. The
generic oracle and property tests also include ``"triton"`` (``_fw.dselect_impls``); this file covers what is
particular to the kernels: expert chunks, tiles of several rows with a partial last one, leading axes, gamma,
saturation, half precision, NaN rows, the launch configuration, and the module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gates import reference as ref
from gates import spec

from ._fw import assert_close, dselect_impls, finite_difference, gate_run

pytest.importorskip("triton", reason="Triton is not installed")
torch = pytest.importorskip("torch", reason="PyTorch is not installed")


@pytest.fixture
def kernels(gt):
    import gates.dselect_triton as kernels

    if not (kernels.interpreted() or torch.cuda.is_available()):
        pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1 at import")
    return kernels


@pytest.fixture
def device(kernels) -> str:
    return "cpu" if kernels.interpreted() else "cuda"


def _weights_and_grads(gt, z, w, c, n, gamma=1.0, dtype=torch.float64, device="cpu", impl="triton"):
    zt = torch.tensor(z, dtype=dtype, device=device, requires_grad=True)
    wt = torch.tensor(w, dtype=dtype, device=device, requires_grad=True)
    q = gt.dselect_k_weights(zt, wt, n, gamma, impl=impl)
    (q * torch.as_tensor(c, dtype=q.dtype, device=device)).sum().backward()
    return [t.detach().cpu().double().numpy() for t in (q, zt.grad, wt.grad)]


def _inputs(rng, lead, k, n, scale=0.6):
    m = spec.num_code_bits(n)
    return rng.normal(size=(*lead, k, m)) * scale, rng.normal(size=(*lead, k)), rng.normal(size=(*lead, n))


def test_the_generic_tests_include_the_triton_impl(gt, kernels):
    assert "triton" in dselect_impls(gt) or torch.cuda.is_available()
    assert kernels.interpreted() != torch.cuda.is_available()


@pytest.mark.parametrize(
    ("lead", "k", "n", "gamma"),
    [
        ((37,), 4, 16, 1.0),  # several rows per program, the last tile partly masked
        ((5,), 3, 300, 1.3),  # two expert chunks, the second masked; n not a power of 2
        ((2, 3), 2, 5, 0.7),  # leading axes
        ((), 4, 64, 1.0),  # a static gate: (k, m) with no batch axis
        ((4,), 1, 2, 2.0),  # k = 1, m = 1
    ],
)
def test_weights_and_gradients_match_the_float64_reference(gt, device, lead, k, n, gamma, rng):
    z, w, c = _inputs(rng, lead, k, n)
    q, gz, gw = _weights_and_grads(gt, z, w, c, n, gamma, device=device)
    assert_close("q", q, ref.dselect_k_weights(z, w, n, gamma), atol=1e-12)
    # gradients: float64 autograd of the bit-by-bit implementation (itself checked against finite differences in
    # test_gates_oracle), and finite differences of the reference on a few rows
    _, gz_b, gw_b = _weights_and_grads(gt, z, w, c, n, gamma, impl="bitwise")
    assert_close("dz", gz, gz_b, atol=1e-12)
    assert_close("dw", gw, gw_b, atol=1e-12)
    if lead == (5,):
        row = 1
        fz = finite_difference(lambda a: float((ref.dselect_k_weights(a, w[row], n, gamma) * c[row]).sum()), z[row])
        assert_close("dz vs finite differences", gz[row], fz, atol=1e-7)


def test_strided_rows_column_slices_of_one_projection(gt, device, rng):
    n, k, b = 16, 3, 11
    m = spec.num_code_bits(n)
    zw = torch.tensor(rng.normal(size=(b, k * m + k)), dtype=torch.float64, device=device, requires_grad=True)
    z, w = zw[:, : k * m].reshape(b, k, m), zw[:, k * m :]  # views: row stride k * m + k
    assert z.stride(0) == k * m + k and not w.is_contiguous()
    c = torch.tensor(rng.normal(size=(b, n)), dtype=torch.float64, device=device)
    (gt.dselect_k_weights(z, w, n, impl="triton") * c).sum().backward()
    got = zw.grad.cpu().numpy()
    zw.grad = None
    (gt.dselect_k_weights(z.cpu(), w.cpu(), n, impl="bitwise") * c.cpu()).sum().backward()
    assert_close("d[z | w]", got, zw.grad.cpu().numpy(), atol=1e-12)


def test_float32_matches_the_reference(gt, device, rng):
    z, w, c = _inputs(rng, (33,), 4, 64)
    q, gz, gw = _weights_and_grads(gt, z, w, c, 64, dtype=torch.float32, device=device)
    _, gz64, gw64 = _weights_and_grads(gt, z, w, c, 64, device=device)
    assert_close("q float32", q, ref.dselect_k_weights(z, w, 64), atol=1e-6)
    assert_close("dz float32", gz, gz64, atol=1e-5, rtol=1e-5)
    assert_close("dw float32", gw, gw64, atol=1e-5, rtol=1e-5)


def test_saturated_bits_give_one_hot_selectors_and_zero_gradients(gt, device, rng):
    n, k = 16, 3
    m = spec.num_code_bits(n)
    codes = rng.integers(0, 2, size=(6, k, m))
    z = np.where(codes == 1, 2.0, -2.0)  # every bit outside the band: s is exactly 0 or 1
    w = rng.normal(size=(6, k))
    c = rng.normal(size=(6, n))
    q, gz, gw = _weights_and_grads(gt, z, w, c, n, device=device)
    experts = codes @ (1 << np.arange(m - 1, -1, -1))  # (6, k): the selected experts, most significant bit first
    alpha = np.exp(w) / np.exp(w).sum(axis=-1, keepdims=True)
    want = np.zeros((6, n))
    for row in range(6):
        np.add.at(want[row], experts[row], alpha[row])
    assert_close("one-hot q", q, want, atol=1e-15)
    assert (gz == 0).all()
    assert np.abs(gw).max() > 0  # the mixture weights still learn


def test_band_edges_have_zero_gradient_as_in_autograd(gt, device):
    z = np.array([[[0.5, -0.5, 0.2], [0.7, -0.9, -0.1]]])  # edges, outside, inside
    w = np.array([[0.3, -0.2]])
    _, gz, _ = _weights_and_grads(gt, z, w, np.arange(8.0)[None], 8, device=device)
    inside = np.abs(z) < 0.5
    assert (gz[~inside] == 0).all() and (gz[inside] != 0).all()


@pytest.mark.parametrize(("dtype", "delta"), [(torch.float64, 1e-10), (torch.float32, 5e-5)])
def test_bits_that_round_to_exactly_0_or_1_inside_the_band(gt, device, dtype, delta, rng):
    """Within ``delta`` of a band edge the smooth-step rounds to exactly 1 (or 0) while its slope (about
    ``6 delta``) is not 0. The backward's quotient form loses the term of such a bit; the kernel recomputes those
    rows. Compared with autograd of the bit-by-bit build in the same dtype: without the recomputation the gradient
    of those bits would be off by about ``6 delta`` times a sum of order 1."""
    n, k = 16, 3
    m = spec.num_code_bits(n)
    z = rng.uniform(-0.4, 0.4, size=(5, k, m))
    for row in range(5):  # several distances, as whether a value rounds to exactly 0 or 1 is down to its bits
        z[row, 0, 1], z[row, 1, 0], z[row, 2, 3] = 0.5 - delta * (row + 1), -0.5 + delta * (row + 1), 0.5 - delta
    w, c = rng.normal(size=(5, k)), rng.normal(size=(5, n))
    q, gz, gw = _weights_and_grads(gt, z, w, c, n, dtype=dtype, device=device)
    q_b, gz_b, gw_b = _weights_and_grads(gt, z, w, c, n, dtype=dtype, impl="bitwise")
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    assert_close("q", q, q_b, atol=tol)
    assert_close("dz", gz, gz_b, atol=tol, rtol=tol)
    assert_close("dw", gw, gw_b, atol=tol, rtol=tol)
    assert abs(gz_b[0, 0, 1]) > 10 * tol  # the bit's gradient is there to lose


def test_half_precision_inputs_compute_in_float32(gt, device, rng):
    z, w, _ = _inputs(rng, (8,), 4, 32)
    zb, wb = (torch.tensor(a, dtype=torch.bfloat16, device=device) for a in (z, w))
    q = gt.dselect_k_weights(zb, wb, 32, impl="triton")
    assert q.dtype == torch.bfloat16
    want = ref.dselect_k_weights(zb.double().cpu().numpy(), wb.double().cpu().numpy(), 32)
    assert_close("bf16 q", q.double().cpu().numpy(), want, atol=2**-8)


def test_a_nan_row_gives_a_nan_row_and_leaves_the_others(gt, device, rng):
    z, w, _ = _inputs(rng, (6,), 2, 8)
    z[1, 0, 2] = np.nan
    w[4, 1] = np.nan
    q = gt.dselect_k_weights(torch.tensor(z, device=device), torch.tensor(w, device=device), 8, impl="triton")
    q = q.cpu().numpy()
    assert np.isnan(q[[1, 4]]).all()
    assert_close("finite rows", q[[0, 2, 3, 5]], ref.dselect_k_weights(z, w, 8)[[0, 2, 3, 5]], atol=1e-12)


def test_an_empty_batch(gt, device):
    z = torch.zeros((0, 2, 3), dtype=torch.float64, device=device, requires_grad=True)
    w = torch.zeros((0, 2), dtype=torch.float64, device=device, requires_grad=True)
    q = gt.dselect_k_weights(z, w, 8, impl="triton")
    assert q.shape == (0, 8)
    q.sum().backward()
    assert z.grad.shape == z.shape


@pytest.mark.parametrize("name", ["entropy", "unreachable"])
def test_module_matches_the_factorized_module(gt, device, name, rng):
    n, k, p = (16, 4, 12) if name == "entropy" else (6, 2, 12)  # n = 6: the unreachable-code penalty is on
    hparams = {"entropy_reg": 0.05} if name == "entropy" else {}
    x, c = rng.normal(size=(9, p)), rng.normal(size=(9, n))
    out = {}
    for impl in ("triton", "factorized"):
        gate = gt.make_gate("dselect_k", n, k, p, seed=5, dtype="float64", impl=impl, **hparams)
        out[impl] = gate_run(gt, gate.to(device), x, training=True, cotangent=c)
    for key in out["factorized"]:
        assert_close(f"module {key}", out["triton"][key], out["factorized"][key], atol=1e-12)


@pytest.mark.parametrize("tile", [512, 2048])
@pytest.mark.parametrize(("batch", "n"), [(1, 2), (7, 16), (4096, 16), (16384, 64), (16384, 256), (300, 4096)])
def test_launch_configuration_covers_the_batch_in_power_of_two_tiles(kernels, batch, n, tile):
    block_b, block_n, programs = kernels.launch_config(batch, n, tile, min_programs=kernels.MIN_PROGRAMS)
    assert block_n == min(1 << spec.num_code_bits(n), kernels.MAX_BLOCK_N)
    assert block_b & (block_b - 1) == 0 and block_b * block_n <= max(tile, block_n)
    assert (programs - 1) * block_b < batch <= programs * block_b
    assert programs >= min(kernels.MIN_PROGRAMS, batch) or block_b == 1


def test_triton_is_a_pytorch_only_impl():
    assert "triton" not in spec.DSELECT_K_IMPLS or "triton" in spec.TORCH_ONLY_IMPLS
    with pytest.raises(ValueError, match=r"impl: expected one of .* in tf; got 'triton'"):
        spec.check_impl("dselect_k", "triton", "tf")
    with pytest.raises(ValueError, match=r"impl: expected one of auto for gate 'topk' in torch; got 'triton'"):
        spec.check_impl("topk", "triton", "torch")


def test_kernels_compile_for_sm90_and_the_named_scales_do_not_spill(tmp_path):
    """Compiled (not interpreted) for an H100/H200 target ahead of time, no GPU needed: the Triton frontend accepts
    the kernels as launched (the interpreter is more lenient) and ptxas fits them in registers."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "resources.json"
    proc = subprocess.run([sys.executable, "-m", "scripts.triton_resources", "--out", str(out), "--shapes", "named"],
                          capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert {(r["kernel"], r["experts"]) for r in rows} == {(k, n) for k in ("fwd", "bwd") for n in (16, 64, 256)}
    for r in rows:
        assert r["spill_store_bytes"] == 0 and 0 < r["registers"] <= 255, r
        assert (r["programs"] - 1) * r["BLOCK_B"] < r["batch"] <= r["programs"] * r["BLOCK_B"]
