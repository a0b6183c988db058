"""GPU paths (PyTorch on CUDA): the same gates on the GPU give the CPU's weights, losses and gradients.

Marked ``gpu``; skipped where PyTorch sees no CUDA device (CI has none). ``scripts/gpu_check.sh`` runs them on the
GPU machine: ``python -m pytest -q -m gpu tests/test_gpu.py``. Only PyTorch and NumPy are needed.
"""

from __future__ import annotations

import numpy as np
import pytest

from gates import spec

from ._fw import assert_close

torch = pytest.importorskip("torch", reason="PyTorch is not installed")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to PyTorch"),
]


def _run(gate, x, noise, cot, device):
    gate = gate.to(device).train()
    gate.zero_grad(set_to_none=True)
    xt = None if x is None else torch.tensor(x, dtype=torch.float32, device=device, requires_grad=True)
    nt = None if noise is None else torch.tensor(noise, dtype=torch.float32, device=device)
    q = gate(xt, noise=nt)
    loss = (q * torch.tensor(cot, dtype=torch.float32, device=device)).sum() + gate.regularization_loss
    loss.backward()
    out = {"weights": q, "reg": gate.regularization_loss}
    out.update({"grad_" + key: p.grad for key, p in gate.named_parameters()})
    if xt is not None:
        out["grad_x"] = xt.grad
    return {key: value.detach().double().cpu().numpy() for key, value in out.items()}


@pytest.mark.parametrize("per_example", [False, True], ids=["static", "per_example"])
@pytest.mark.parametrize("n", [5, 16, 256])
@pytest.mark.parametrize("name", spec.GATE_NAMES)
def test_cuda_matches_cpu(gt, name, n, per_example):
    torch.backends.cuda.matmul.allow_tf32 = False
    rng = np.random.default_rng(n)
    k, p = min(4, n), (32 if per_example else None)
    hparams = {"dselect_k": {"entropy_reg": 0.01}, "hard_concrete": {"l0_reg": 0.01}}.get(name, {})
    shape = (64, n) if per_example else (n,)
    x = rng.normal(size=(64, p)) if per_example else None
    noise = rng.uniform(0.05, 0.95, size=shape) if name == "hard_concrete" else None
    cot = rng.normal(size=shape)
    cpu, gpu = (gt.make_gate(name, n, k, p, seed=3, **hparams) for _ in range(2))
    a, b = _run(cpu, x, noise, cot, "cpu"), _run(gpu, x, noise, cot, "cuda")
    for key in a:
        assert_close(f"{name} {key} cuda vs cpu", b[key], a[key], atol=1e-5, rtol=1e-5)


def test_harness_times_a_cuda_case_with_events():
    from harness.cases import Case
    from harness.runner import Task, execute_task
    from harness.suite import DEFAULT_SETTINGS

    case = Case(gate="dselect_k", framework="torch", device="gpu", impl="eager", mode="fwdbwd",
                gating="per_example", batch=1024, input_dim=256, experts=64, k=4, dtype="float32")
    row = execute_task(Task("timing", "gpu-test", {**DEFAULT_SETTINGS, "warmup_ms": 5, "rep_ms": 20}, case.params()))
    assert row["status"] == "ok", row.get("error")
    assert row["median_ms"] > 0 and row["n_samples"] >= 5 and row["peak_mem_bytes"] > 0
    assert "gpu" in row["provenance"]


@pytest.mark.parametrize(("batch", "n", "k"), [(4096, 16, 4), (2048, 64, 4), (1024, 256, 8), (257, 1000, 3)])
def test_triton_kernels_on_cuda_match_float64_autograd(gt, batch, n, k):
    """The fused kernels compiled for the GPU (the CPU suite runs them in Triton's interpreter): weights and
    gradients of a float32 CUDA run against float64 autograd of the bit-by-bit build on the CPU."""
    pytest.importorskip("triton", reason="Triton is not installed")
    rng = np.random.default_rng(batch + n)
    m = spec.num_code_bits(n)
    z, w, c = rng.normal(size=(batch, k, m)) * 0.6, rng.normal(size=(batch, k)), rng.normal(size=(batch, n))
    z[: batch // 4] *= 5  # a quarter of the rows mostly saturated
    out = {}
    for impl, device, dtype in (("triton", "cuda", torch.float32), ("bitwise", "cpu", torch.float64)):
        zt = torch.tensor(z, dtype=dtype, device=device, requires_grad=True)
        wt = torch.tensor(w, dtype=dtype, device=device, requires_grad=True)
        q = gt.dselect_k_weights(zt, wt, n, impl=impl)
        (q * torch.tensor(c, dtype=dtype, device=device)).sum().backward()
        out[impl] = [t.detach().double().cpu().numpy() for t in (q, zt.grad, wt.grad)]
    for name, got, want in zip(("q", "dz", "dw"), out["triton"], out["bitwise"], strict=True):
        assert_close(f"triton {name} n={n}", got, want, atol=1e-5, rtol=1e-5)


def test_harness_times_the_triton_impl():
    pytest.importorskip("triton", reason="Triton is not installed")
    from harness.cases import Case
    from harness.runner import Task, execute_task
    from harness.suite import DEFAULT_SETTINGS

    case = Case(gate="dselect_k", framework="torch", device="gpu", impl="triton", mode="fwdbwd",
                gating="per_example", batch=2048, input_dim=256, experts=256, k=8, dtype="float32")
    row = execute_task(Task("timing", "gpu-test", {**DEFAULT_SETTINGS, "warmup_ms": 5, "rep_ms": 20}, case.params()))
    assert row["status"] == "ok", row.get("error")
    assert row["median_ms"] > 0 and row["peak_mem_bytes"] > 0
