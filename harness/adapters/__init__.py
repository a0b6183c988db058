"""Framework adapters: the small, framework-specific part of timing.

Each adapter module (``harness.adapters.torch``, ``harness.adapters.tf``) provides the same functions:

* ``check_device(device)``: raise ``Unavailable`` (a skip, with the reason) when the device is missing.
* ``devices()``: the devices usable here (``"cpu"``, ``"gpu"``).
* ``sync_fn(device)``: a callable that waits for queued device work, or None where calls are synchronous.
* ``event_factory(device)``: ``() -> (start, end)`` device timing events, or None (host clock).
* ``flush_fn(device)``: a callable that overwrites a buffer larger than the L2 cache (GPU), or None.
* ``peak_memory(fn, device) -> int | None``: extra bytes allocated above the level at the start of ``fn()``.
* ``to_tensor(array, device, dtype, requires_grad=False)`` / ``to_numpy(tensor)``: NumPy in and out.
* ``reset_grads(tensors)``: clear accumulated gradients.
* ``versions(device) -> dict``: framework version, GPU name and driver, for a row's provenance.
* ``build_workload(case, settings) -> Workload``: the timed callable of a case and its accuracy check.

Importing this package imports no framework; ``get_adapter`` imports one on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["Unavailable", "Workload", "get_adapter", "framework_installed", "compare_grads"]

_MODULES = {"torch": "harness.adapters.torch", "tf": "harness.adapters.tf"}
_PACKAGES = {"torch": "torch", "tf": "tensorflow"}


class Unavailable(RuntimeError):
    """A framework, device or implementation is missing here: the case is skipped with this reason."""


def framework_installed(framework: str) -> bool:
    """True when the framework's package can be imported (checked without importing it)."""
    if framework not in _PACKAGES:
        raise ValueError(f"framework: expected one of {', '.join(_PACKAGES)}; got {framework!r}")
    return importlib.util.find_spec(_PACKAGES[framework]) is not None


def get_adapter(framework: str) -> ModuleType:
    """The adapter module of ``framework``; ``Unavailable`` when the framework is not installed."""
    if not framework_installed(framework):
        raise Unavailable(f"{_PACKAGES[framework]} is not installed")
    return importlib.import_module(_MODULES[framework])


@dataclass
class Workload:
    """A built case, ready to time: ``fn()`` is the timed call; the others are run by the runner around it.

    ``check()`` returns the accuracy columns (``max_abs_err``, ``max_grad_err``, ``ambiguous_rows``) and
    ``ok`` (within the dtype's tolerance); ``memory()`` measures peak extra bytes of one ``fn()`` (None where
    there is no honest measure). ``compile_ms`` is the first call's time for compiled impls.
    """

    fn: Callable[[], Any]
    check: Callable[[], dict[str, Any]]
    memory: Callable[[], int | None]
    setup: Callable[[], None] | None = None
    sync: Callable[[], None] | None = None
    event_factory: Callable[[], tuple[Any, Any]] | None = None
    flush: Callable[[], None] | None = None
    compile_ms: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


def compare_grads(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> tuple[float, str]:
    """Largest gradient error relative to ``max(1, max |want|)`` over tensors, and the tensor that has it."""
    worst, where = 0.0, ""
    for name, ref in want.items():
        if name not in got:
            raise ValueError(f"gradients: {name!r} missing from the measured gradients ({sorted(got)})")
        g = np.asarray(got[name], dtype=np.float64)
        if g.shape != ref.shape:
            raise ValueError(f"gradients: {name!r} has shape {g.shape}; expected {ref.shape}")
        err = float(np.max(np.abs(g - ref), initial=0.0) / max(1.0, float(np.max(np.abs(ref), initial=0.0))))
        if not np.isfinite(err):
            err = float("inf")
        if err > worst or not where:
            worst, where = err, name
    return worst, where
