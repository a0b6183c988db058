"""gatebench gates: DSelect-k, Top-k, softmax, hard concrete and the newer routers (sigmoid_topk, sparsemax, entmax15,
ReMoE), matching in PyTorch and TensorFlow.

``import gates`` loads NumPy only. The frameworks load when asked: ``gates.backend("torch")`` (or
``import gates.torch``) and ``gates.backend("tf")`` (or ``import gates.tf``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from . import reference, spec
from .spec import GATE_NAMES, GateConfig, binary_codes, make_config, num_code_bits

FRAMEWORKS: tuple[str, ...] = ("torch", "tf")

__all__ = [
    "FRAMEWORKS",
    "GATE_NAMES",
    "GateConfig",
    "backend",
    "binary_codes",
    "make_config",
    "num_code_bits",
    "reference",
    "spec",
]


def backend(framework: str) -> ModuleType:
    """The gate module of a framework (``"torch"`` or ``"tf"``), imported on first use."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework: expected one of {', '.join(FRAMEWORKS)}; got {framework!r}")
    return importlib.import_module(f"{__name__}.{framework}")
