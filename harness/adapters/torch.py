"""PyTorch adapter: devices, synchronisation, CUDA events, L2 flush, peak memory, NumPy in/out, gradient reset,
and the workload of a timing case. See ``harness.adapters`` for the contract.

Peak memory: on CUDA, the caching allocator's statistics (``reset_peak_memory_stats``, ``max_memory_allocated``
minus ``memory_allocated`` at the start). On the CPU, the profiler's memory events
(``torch.profiler.profile(profile_memory=True)``): every CPU allocation and free made through PyTorch's allocator,
in time order, summed into a running total whose maximum is the peak above the start. It counts tensors (what the
gate allocates), not the Python heap or memory that libraries allocate outside PyTorch's allocator.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

import gates
from harness import accuracy, cases
from harness.adapters import CaseBuild, Unavailable, Workload, make_workload

__all__ = [
    "devices", "check_device", "check_triton", "torch_device", "sync_fn", "event_factory", "flush_fn",
    "peak_memory_bytes", "peak_memory", "to_tensor", "to_numpy", "reset_grads", "versions", "build_workload",
]

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
L2_FLUSH_BYTES = 256 * 1024 * 1024  # larger than any current GPU's L2 cache (H100/H200: 50-60 MB), as do_bench


def devices() -> list[str]:
    return ["cpu"] + (["gpu"] if torch.cuda.is_available() else [])


def check_device(device: str) -> None:
    device = cases.normalize_device(device)
    if device == "gpu" and not torch.cuda.is_available():
        raise Unavailable("no CUDA device visible to PyTorch (torch.cuda.is_available() is False)")


def check_triton(device: str) -> None:
    """DSelect-k's ``impl="triton"`` is timed on a CUDA GPU with Triton installed; elsewhere the case is skipped."""
    if cases.normalize_device(device) != "gpu":
        raise Unavailable("impl 'triton' runs on CUDA GPUs (on the CPU only Triton's interpreter runs it, which "
                          "tests it but is no benchmark)")
    if importlib.util.find_spec("triton") is None:
        raise Unavailable("impl 'triton' needs the triton package, which is not installed")


def torch_device(device: str) -> torch.device:
    return torch.device("cuda" if cases.normalize_device(device) == "gpu" else "cpu")


def sync_fn(device: str) -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` on a GPU; None on the CPU, where an op has finished when it returns."""
    return torch.cuda.synchronize if cases.normalize_device(device) == "gpu" else None


def event_factory(device: str) -> Callable[[], tuple[Any, Any]] | None:
    """CUDA timing events on a GPU (device time of each repetition); None on the CPU (host clock)."""
    if cases.normalize_device(device) != "gpu":
        return None
    return lambda: (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))


def flush_fn(device: str) -> Callable[[], None] | None:
    """A callable that zeroes a 256 MiB buffer (evicting L2) on a GPU; None on the CPU."""
    if cases.normalize_device(device) != "gpu":
        return None
    buffer = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    return buffer.zero_


def peak_memory_bytes(fn: Callable[[], Any], device: str = "cpu") -> int:
    """Peak bytes allocated by PyTorch during ``fn()`` above the level at its start.

    CUDA: allocator statistics. CPU: the profiler's allocation and free events summed in time order (see the
    module docstring for what this counts).
    """
    if cases.normalize_device(device) == "gpu":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "99")  # read when the profiler starts: no start/stop lines on stderr
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [
        (e.start_ns(), int(e.nbytes()))
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")
    ]
    events.sort(key=lambda item: item[0])
    total = peak = 0
    for _, nbytes in events:
        total += nbytes
        peak = max(peak, total)
    return int(peak)


def peak_memory(fn: Callable[[], Any], device: str) -> int | None:
    """Adapter form of ``peak_memory_bytes`` (always a number for PyTorch)."""
    return peak_memory_bytes(fn, device)


def to_tensor(array: np.ndarray | None, device: str, dtype: str, requires_grad: bool = False) -> torch.Tensor | None:
    if array is None:
        return None
    t = torch.tensor(np.asarray(array), device=torch_device(device)).to(_DTYPES[dtype])
    return t.requires_grad_(requires_grad)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """float64 NumPy copy (bfloat16 has no NumPy dtype)."""
    return tensor.detach().to("cpu", torch.float64).numpy()


def reset_grads(tensors: Sequence[torch.Tensor]) -> None:
    """Drop accumulated gradients (``grad = None``, as ``zero_grad(set_to_none=True)``)."""
    for t in tensors:
        t.grad = None


@functools.lru_cache(maxsize=1)
def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def versions(device: str) -> dict[str, Any]:
    out: dict[str, Any] = {"framework": "torch", "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if cases.normalize_device(device) == "gpu":
        out.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(), gpu_driver=_driver_version())
    return out


# --------------------------------------------------------------------------------------------------------------
# Workloads: the PyTorch calls of a case; harness.adapters.make_workload does the rest.
# --------------------------------------------------------------------------------------------------------------
def _grads64(case: cases.Case, dev: torch.device, gate_params: Mapping[str, np.ndarray], x: np.ndarray | None,
             noise: np.ndarray | None, c: np.ndarray) -> dict[str, np.ndarray]:
    """Gradients of ``sum(q * c) + regularization`` by float64 autograd (training mode), w.r.t. params and x."""
    G = gates.backend("torch")
    impl = "bitwise" if case.gate == "dselect_k" else "auto"
    g64 = G.make_gate(case.gate, case.experts, case.k, case.input_dim, dtype="float64", device=dev, impl=impl,
                      **dict(case.hparams))
    g64.set_numpy_params(dict(gate_params))
    g64.train(True)
    device = "gpu" if dev.type == "cuda" else "cpu"
    x64 = to_tensor(x, device, "float64", requires_grad=True)
    n64 = to_tensor(noise, device, "float64")
    q64 = g64(x64, noise=n64) if x64 is not None else g64(noise=n64)
    ((q64 * to_tensor(c, device, "float64")).sum() + g64.regularization_loss).backward()
    out = {name: to_numpy(p.grad) if p.grad is not None else np.zeros(tuple(p.shape))
           for name, p in g64.named_parameters()}
    if x64 is not None:
        out["x"] = to_numpy(x64.grad)
    return out


def _gate_calls(gate: torch.nn.Module) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``forward(x)`` and ``loss_fn(x, c, noise) -> (loss, q)`` of a gate (x None: a static gate)."""

    def forward(x_: torch.Tensor | None) -> torch.Tensor:
        return gate(x_) if x_ is not None else gate()

    def loss_fn(x_: torch.Tensor | None, c_: torch.Tensor, noise_: torch.Tensor | None):
        q = gate(x_, noise=noise_, check_noise=False) if x_ is not None else gate(noise=noise_, check_noise=False)
        return (q * c_).sum() + gate.regularization_loss, q

    return forward, loss_fn


class _TorchCase(CaseBuild):
    """A case's gate (seeded, on its device, in its dtype and impl), its tensors and its PyTorch calls.

    ``compiled``: ``torch.compile`` of the forward and of the loss function (whose backward AOTAutograd compiles
    too), from an empty Dynamo cache: Dynamo caches compiled code per code object (the nested functions of
    ``_gate_calls`` are one code object for every case) and falls back to eager past its cache limit.
    """

    def __init__(self, case: cases.Case):
        self.case, self.dev = case, torch_device(case.device)
        inputs = cases.make_inputs(case)
        self.gate = gates.backend("torch").make_gate(
            case.gate, case.experts, case.k, case.input_dim, dtype=case.dtype, device=self.dev,
            seed=cases.SEED_PARAMS, impl=cases.make_gate_impl(case), **dict(case.hparams))
        self.gate.train(case.training)
        self.x = to_tensor(inputs.x, case.device, case.dtype, requires_grad=case.training and case.per_example)
        self.c = to_tensor(inputs.c, case.device, case.dtype)
        self.noise = to_tensor(inputs.noise, case.device, case.dtype) if case.training else None
        self.c_check = to_tensor(accuracy.check_c(case, inputs), case.device, case.dtype)
        with_x = self.x is not None and self.x.requires_grad
        self.grad_names = [name for name, _ in self.gate.named_parameters()] + (["x"] if with_x else [])
        self.grad_tensors = list(self.gate.parameters()) + ([self.x] if with_x else [])
        self.forward, self.loss_fn = _gate_calls(self.gate)
        if case.impl == "compiled":
            torch._dynamo.reset()
            self.forward = torch.compile(self.forward, dynamic=False)
            self.loss_fn = torch.compile(self.loss_fn, dynamic=False)
        if case.training:
            self.reset = functools.partial(reset_grads, self.grad_tensors)

    numpy = staticmethod(to_numpy)

    def eval_call(self) -> Callable[[], Any]:
        forward, x = self.forward, self.x

        def fn() -> Any:
            with torch.no_grad():
                return forward(x)
        return fn

    def train_call(self) -> Callable[[], Any]:
        loss_fn, x, c, noise = self.loss_fn, self.x, self.c, self.noise

        def fn() -> Any:
            loss_fn(x, c, noise)[0].backward()
        return fn

    def backward_call(self) -> Callable[[], Any]:
        """The forward once with its graph kept; each call is ``loss.backward(retain_graph=True)``. Compiled:
        AOTAutograd donates saved buffers to the backward unless told not to, which forbids ``retain_graph``."""
        if self.case.impl == "compiled":
            with torch._functorch.config.patch(donated_buffer=False):
                loss = self.loss_fn(self.x, self.c, self.noise)[0]
        else:
            loss = self.loss_fn(self.x, self.c, self.noise)[0]

        def fn() -> Any:
            loss.backward(retain_graph=True)
        return fn

    def eval_weights(self) -> np.ndarray:
        with torch.no_grad():
            return to_numpy(self.forward(self.x))

    def train_weights_and_grads(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        reset_grads(self.grad_tensors)
        loss, q = self.loss_fn(self.x, self.c_check, self.noise)
        loss.backward()
        grads = {name: (to_numpy(t.grad) if t.grad is not None else np.zeros(tuple(t.shape)))
                 for name, t in zip(self.grad_names, self.grad_tensors, strict=True)}
        reset_grads(self.grad_tensors)
        return to_numpy(q), grads

    def grads64(self, gate_params: Mapping[str, np.ndarray], x: np.ndarray | None, noise: np.ndarray | None,
                c: np.ndarray) -> dict[str, np.ndarray]:
        return _grads64(self.case, self.dev, gate_params, x, noise, c)


def build_workload(case: cases.Case, settings: Mapping[str, Any] | None = None) -> Workload:
    """Build the gate of ``case`` (seeded), its inputs and the timed call of its mode and impl.

    ``fwd``: ``gate(x)`` in eval mode under ``no_grad``. ``fwdbwd``: training-mode forward, ``loss = sum(q*c) +
    regularization_loss``, ``loss.backward()``; gradients reset (set to None) before each repetition, outside the
    timed region. ``bwd``: the forward runs once with its graph kept; each repetition is
    ``loss.backward(retain_graph=True)`` alone. ``compiled``: ``torch.compile`` of the module (``fwd``) or of the
    loss function (backward modes, whose backward AOTAutograd compiles too); ``compile_ms`` is the first call.
    """
    check_device(case.device)
    if case.impl == "triton":
        check_triton(case.device)
    return make_workload(case, _TorchCase(case), settings)
