"""Framework adapters: the small, framework-specific part of timing.

Each adapter module (``harness.adapters.torch``, ``harness.adapters.tf``) is an ``Adapter``: the members below are
what callers use (the runner, the CLI, ``benchmarks/``, ``scripts/``), and ``tests/test_adapters.py`` checks both
modules against it. Each module also has its own helpers (``to_tensor``, ``to_numpy``, ``reset_grads``; PyTorch's
``peak_memory_bytes``), which are not part of the contract.

A framework module writes only its framework's operations for a case (a ``CaseBuild``: build the gate and its
tensors, the eval call, the training step, the backward alone, and the accuracy ``Probe`` of ``harness.accuracy``);
``make_workload`` here does the rest once for both: mode dispatch, the first (compiling) call, the accuracy check,
peak memory and the row labels.

Importing this package imports no framework; ``get_adapter`` imports one on first use.
"""

from __future__ import annotations

import abc
import functools
import importlib
import importlib.util
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from harness import accuracy, cases, timer

__all__ = ["Unavailable", "Adapter", "Workload", "CaseBuild", "make_workload", "get_adapter", "framework_installed"]

_MODULES = {"torch": "harness.adapters.torch", "tf": "harness.adapters.tf"}
_PACKAGES = {"torch": "torch", "tf": "tensorflow"}


class Unavailable(RuntimeError):
    """A framework, device or implementation is missing here: the case is skipped with this reason."""


@dataclass
class Workload:
    """A built case, ready to time: ``fn()`` is the timed call; the others are run by the runner around it.

    ``check()`` returns the accuracy columns (``max_abs_err``, ``max_grad_err``, ``fd_grad_err``,
    ``ambiguous_rows``) and ``ok`` (within the dtype's tolerance; see ``harness.accuracy.check``); ``memory()``
    measures peak extra bytes of one ``fn()`` (None where there is no honest measure). ``compile_ms`` is the first
    call's time for compiled impls. ``labels`` are extra row columns: ``gate_impl`` and ``compiler``
    (``harness.cases.labels``).
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
    labels: dict[str, Any] = field(default_factory=dict)


class Adapter(Protocol):
    """What a framework adapter module provides (the members its callers use)."""

    def devices(self) -> list[str]:
        """The devices usable here: ``"cpu"``, and ``"gpu"`` when the framework sees one."""

    def check_device(self, device: str) -> None:
        """Raise ``Unavailable`` (a skip, with the reason) when ``device`` is missing here."""

    def sync_fn(self, device: str) -> Callable[[], None] | None:
        """A callable that waits for queued device work, or None where calls are synchronous."""

    def event_factory(self, device: str) -> Callable[[], tuple[Any, Any]] | None:
        """``() -> (start, end)`` device timing events, or None (host clock)."""

    def flush_fn(self, device: str) -> Callable[[], None] | None:
        """A callable that overwrites a buffer larger than the L2 cache (GPU), or None."""

    def peak_memory(self, fn: Callable[[], Any], device: str) -> int | None:
        """Extra bytes allocated above the level at the start of ``fn()``, or None (no honest measure)."""

    def versions(self, device: str) -> dict[str, Any]:
        """Framework version (GPU name, driver, ...) for a row's provenance."""

    def build_workload(self, case: cases.Case, settings: Mapping[str, Any] | None = None) -> Workload:
        """The timed callable of ``case``, its accuracy check and its memory measure."""


def framework_installed(framework: str) -> bool:
    """True when the framework's package can be imported (checked without importing it)."""
    if framework not in _PACKAGES:
        raise ValueError(f"framework: expected one of {', '.join(_PACKAGES)}; got {framework!r}")
    return importlib.util.find_spec(_PACKAGES[framework]) is not None


def get_adapter(framework: str) -> Adapter:
    """The adapter module of ``framework``; ``Unavailable`` when the framework is not installed."""
    if not framework_installed(framework):
        raise Unavailable(f"{_PACKAGES[framework]} is not installed")
    return importlib.import_module(_MODULES[framework])


class CaseBuild(abc.ABC):
    """One case built in a framework: the gate, its tensors and the framework's calls (and an ``accuracy.Probe``).

    A subclass sets ``gate`` (with ``get_numpy_params()``), ``x`` (None for a static gate), ``noise`` (None in eval
    mode or without noise) and ``c_check`` (``accuracy.check_c`` as a tensor of the case's dtype), and ``numpy``
    (tensor -> float64 NumPy). ``reset`` runs before each repetition of a backward mode, outside the timed region
    (PyTorch: drop accumulated gradients); None where there is nothing to reset (and always for ``fwd``).
    """

    gate: Any
    x: Any
    noise: Any
    c_check: Any
    reset: Callable[[], None] | None = None

    @staticmethod
    @abc.abstractmethod
    def numpy(tensor: Any) -> np.ndarray:
        """A float64 NumPy copy of a framework tensor."""

    @abc.abstractmethod
    def eval_call(self) -> Callable[[], Any]:
        """``fwd``: the test-time forward on the case's ``x``, no gradient."""

    @abc.abstractmethod
    def train_call(self) -> Callable[[], Any]:
        """``fwdbwd``: training forward, ``loss = sum(q * c) + regularization_loss``, gradients of every parameter
        and ``x``."""

    @abc.abstractmethod
    def backward_call(self) -> Callable[[], Any]:
        """``bwd``: records the training forward once (now) and returns its backward alone."""

    # accuracy.Probe (see there)
    def used_inputs(self) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray | None, np.ndarray]:
        x, noise = self.x, self.noise
        return (self.gate.get_numpy_params(), None if x is None else self.numpy(x),
                None if noise is None else self.numpy(noise), self.numpy(self.c_check))

    @abc.abstractmethod
    def eval_weights(self) -> np.ndarray: ...

    @abc.abstractmethod
    def train_weights_and_grads(self) -> tuple[np.ndarray, dict[str, np.ndarray]]: ...

    @abc.abstractmethod
    def grads64(self, gate_params: Mapping[str, np.ndarray], x: np.ndarray | None, noise: np.ndarray | None,
                c: np.ndarray) -> dict[str, np.ndarray]: ...


def _timed_call(case: cases.Case, build: CaseBuild,
                sync: Callable[[], None] | None) -> tuple[Callable[[], Any], Callable[[], None] | None, float | None]:
    """``(fn, setup, compile_ms)`` of the case's mode. ``compile_ms`` (``compiled`` impls only) is the first call,
    plus for ``bwd`` the forward recorded once; gradients are reset after it."""
    first_ms = 0.0
    if case.mode == "fwd":
        fn, setup = build.eval_call(), None
    elif case.mode == "fwdbwd":
        fn, setup = build.train_call(), build.reset
    else:
        t0 = time.perf_counter()
        fn, setup = build.backward_call(), build.reset
        first_ms = (time.perf_counter() - t0) * 1e3
    if case.impl != "compiled":
        return fn, setup, None
    compile_ms = first_ms + timer.time_once(fn, sync)
    if setup is not None:
        setup()
    return fn, setup, compile_ms


def make_workload(case: cases.Case, build: CaseBuild, settings: Mapping[str, Any] | None = None) -> Workload:
    """The ``Workload`` of a built case: its mode's timed call (and ``compile_ms``), ``accuracy.check`` on the
    build, peak memory of one call (after its ``setup``) and the device callables of the case's adapter."""
    settings = settings or {}
    adapter: Adapter = importlib.import_module(_MODULES[case.framework])
    sync = adapter.sync_fn(case.device)
    fn, setup, compile_ms = _timed_call(case, build, sync)

    def memory() -> int | None:
        if setup is not None:
            setup()
        return adapter.peak_memory(fn, case.device)

    return Workload(
        fn=fn, check=functools.partial(accuracy.check, case, build), memory=memory, setup=setup, sync=sync,
        event_factory=adapter.event_factory(case.device),
        flush=adapter.flush_fn(case.device) if settings.get("flush_l2", False) else None, compile_ms=compile_ms,
        provenance=adapter.versions(case.device), labels=cases.labels(case),
    )
