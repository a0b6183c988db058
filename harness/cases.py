"""Timing cases: what is measured (a frozen record, like ``torch.utils.benchmark``'s ``TaskSpec``), the seeded NumPy
inputs every framework sees, and the extra labels of a case's row. Framework free. The accuracy check (tolerances,
oracle comparison, finite differences) is ``harness.accuracy``.

A case is one cell of a suite's grid: ``gate x framework x device x impl x mode x gating x shape x dtype``.

* ``gating``: ``"per_example"`` times ``gate(x)`` with ``x (batch, input_dim)``, projection included;
  ``"static"`` times ``gate()`` (weights ``(experts,)``), so ``batch`` and ``input_dim`` are None.
* ``impl`` (the case column; results files depend on its values): ``"eager"`` (default gate; DSelect-k's
  factorized path), ``"compiled"`` (``torch.compile`` / ``tf.function(jit_compile=True)``), and for ``dselect_k``
  only ``"bitwise"``, ``"reference"`` and (PyTorch on a GPU only) ``"triton"``: the gate built with
  ``make_gate(..., impl=...)`` (``make_gate_impl``).
* ``mode``: ``"fwd"`` (inference: eval mode, no gradient), ``"bwd"`` (the backward of a recorded forward, alone),
  ``"fwdbwd"`` (forward and backward). Training-mode cases compute ``loss = sum(q * c) + regularization_loss``
  for a seeded ``c`` and fixed seeded noise (Top-k's eps, hard concrete's u), gradients w.r.t. every parameter
  and ``x``.

Two vocabularies name implementations, and a row carries both (``labels``, merged into the timing row):

* the case column ``impl``: ``eager | compiled | bitwise | reference | triton`` (how the case is run);
* the gate's own ``impl=`` of ``make_gate``: ``auto | factorized | bitwise | reference | triton``. The row column
  ``gate_impl`` is its resolved value: ``factorized`` (DSelect-k's ``auto``), ``bitwise``, ``reference``,
  ``triton``, or ``default`` for the gates with one implementation;
* and the row column ``compiler``: ``none``, ``inductor`` (``torch.compile``) or ``xla``
  (``tf.function(jit_compile=True)``; also TensorFlow's *eager* DSelect-k, whose factorized weights are one
  XLA-compiled function inside the eager gate).

Words: ``gate_params`` are a gate's weights (NumPy arrays by parameter name); ``case.params()`` are the row's
identifying columns (``from_params`` is its inverse).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gates import spec
from harness.results import TIMING_KEYS, case_id

__all__ = [
    "Case", "CaseInputs", "GATES", "FRAMEWORKS", "DEVICES", "IMPLS", "MODES", "GATINGS", "DTYPES", "COMPILERS",
    "CHECK_ROWS", "normalize_device", "make_inputs", "make_gate_impl", "resolved_gate_impl", "compiler", "labels",
    "cast_like", "reference_bytes",
]

GATES: tuple[str, ...] = spec.GATE_NAMES
FRAMEWORKS: tuple[str, ...] = ("torch", "tf")
DEVICES: tuple[str, ...] = ("cpu", "gpu")
IMPLS: tuple[str, ...] = ("eager", "compiled", "bitwise", "reference", "triton")
DSELECT_ONLY_IMPLS: tuple[str, ...] = ("bitwise", "reference", "triton")
TORCH_ONLY_IMPLS: tuple[str, ...] = spec.TORCH_ONLY_IMPLS
MODES: tuple[str, ...] = ("fwd", "bwd", "fwdbwd")
GATINGS: tuple[str, ...] = ("static", "per_example")
DTYPES: tuple[str, ...] = ("float32", "float64", "bfloat16")
COMPILERS: tuple[str, ...] = ("none", "inductor", "xla")

# Seeds of the inputs; append only (changing one changes every recorded number).
SEED_PARAMS, SEED_X, SEED_C, SEED_NOISE = 0, 1, 2, 3

# Rows of a per-example case that the accuracy check's NumPy reference recomputes (``harness.accuracy``).
CHECK_ROWS = 256


def normalize_device(device: Any) -> str:
    """``"cpu"``; ``"gpu"`` (aliases ``"cuda"``, ``"cuda:0"``, ``"gpu:0"``) -> ``"gpu"``."""
    name = str(device).lower()
    if name == "cpu":
        return "cpu"
    if name in ("gpu", "cuda", "cuda:0", "gpu:0"):
        return "gpu"
    raise ValueError(f"device: expected 'cpu' or 'gpu' (or 'cuda'); got {device!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(choices)}; got {value!r}")
    return value


def _check_pos_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1; got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Case:
    """One timing case. The first fields are ``harness.results.TIMING_KEYS``; ``hparams`` are gate options."""

    gate: str
    framework: str
    device: str
    impl: str
    mode: str
    gating: str
    batch: int | None
    input_dim: int | None
    experts: int
    k: int
    dtype: str = "float32"
    hparams: tuple[tuple[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        _check_choice("gate", self.gate, GATES)
        _check_choice("framework", self.framework, FRAMEWORKS)
        object.__setattr__(self, "device", normalize_device(self.device))
        _check_choice("impl", self.impl, IMPLS)
        if self.impl in DSELECT_ONLY_IMPLS and self.gate != "dselect_k":
            raise ValueError(f"impl: {self.impl!r} exists for gate 'dselect_k' only; got gate {self.gate!r}")
        if self.impl in TORCH_ONLY_IMPLS and self.framework != "torch":
            raise ValueError(f"impl: {self.impl!r} exists for framework 'torch' only; got {self.framework!r}")
        _check_choice("mode", self.mode, MODES)
        _check_choice("gating", self.gating, GATINGS)
        _check_choice("dtype", self.dtype, DTYPES)
        experts = _check_pos_int("experts", self.experts)
        spec.check_k(self.k, experts)
        if self.gating == "static":
            if self.batch is not None or self.input_dim is not None:
                raise ValueError(
                    f"batch, input_dim: a static case has neither (None); got {self.batch!r}, {self.input_dim!r}"
                )
        else:
            _check_pos_int("batch", self.batch)
            _check_pos_int("input_dim", self.input_dim)
        hp = dict(self.hparams)
        object.__setattr__(self, "hparams", tuple(sorted(hp.items())))
        spec.make_config(self.gate, experts, self.k, self.input_dim, **hp)  # validates the hparams

    # --- rows ------------------------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The row's identifying columns: ``TIMING_KEYS`` plus ``hparams`` (a JSON string) when there are any."""
        out = {key: getattr(self, key) for key in TIMING_KEYS}
        if self.hparams:
            out["hparams"] = json.dumps(dict(self.hparams), sort_keys=True, separators=(",", ":"))
        return out

    @property
    def case_id(self) -> str:
        return case_id(self.params())

    @classmethod
    def from_params(cls, columns: Mapping[str, Any]) -> Case:
        """Inverse of ``params()`` (a row's identifying columns); unknown keys are a ValueError."""
        known = set(TIMING_KEYS) | {"hparams"}
        unknown = sorted(set(columns) - known)
        if unknown:
            raise ValueError(f"columns: unknown keys {unknown}; expected {sorted(known)}")
        values = {key: columns[key] for key in TIMING_KEYS if key in columns}
        hp = columns.get("hparams") or {}
        if isinstance(hp, str):
            hp = json.loads(hp)
        return cls(**values, hparams=tuple(sorted(dict(hp).items())))

    # --- derived ---------------------------------------------------------------------------------------------
    @property
    def per_example(self) -> bool:
        return self.gating == "per_example"

    @property
    def training(self) -> bool:
        """Backward modes run the gate in training mode (regularisers and noise on); ``fwd`` in eval mode."""
        return self.mode != "fwd"

    def config(self) -> spec.GateConfig:
        return spec.make_config(self.gate, self.experts, self.k, self.input_dim, **dict(self.hparams))

    @property
    def weights_shape(self) -> tuple[int, ...]:
        return (self.batch, self.experts) if self.per_example else (self.experts,)


def make_gate_impl(case: Case) -> str:
    """The ``make_gate(impl=...)`` argument of a case: ``bitwise``/``reference``/``triton`` as named, else
    ``auto``."""
    return case.impl if case.impl in DSELECT_ONLY_IMPLS else "auto"


def resolved_gate_impl(case: Case) -> str:
    """The implementation the gate of ``case`` runs: DSelect-k's ``make_gate_impl`` with ``auto`` resolved to
    ``factorized``; ``default`` for the other gates (they have one)."""
    if case.gate != "dselect_k":
        return "default"
    impl = make_gate_impl(case)
    return "factorized" if impl == "auto" else impl


def compiler(case: Case) -> str:
    """What compiles the timed call: ``inductor`` (PyTorch ``compiled``), ``xla`` (TensorFlow ``compiled``, and
    TensorFlow's factorized DSelect-k, XLA-compiled inside the eager gate) or ``none``."""
    if case.impl == "compiled":
        return "inductor" if case.framework == "torch" else "xla"
    if case.framework == "tf" and resolved_gate_impl(case) == "factorized":
        return "xla"
    return "none"


def labels(case: Case) -> dict[str, Any]:
    """The extra row columns of a case (``Workload.labels``): ``gate_impl`` (``resolved_gate_impl``) and
    ``compiler``; see the module docstring for both vocabularies."""
    return {"gate_impl": resolved_gate_impl(case), "compiler": compiler(case)}


@dataclass(frozen=True)
class CaseInputs:
    """Seeded float64 NumPy inputs of a case (cast by the adapter to the case's dtype).

    ``gate_params`` (``config.init_params(SEED_PARAMS)``), ``x (batch, input_dim)`` or None, ``c`` shaped like the
    weights (the loss is ``sum(q * c)``), ``noise`` (Top-k: standard normal, hard concrete: uniform in
    ``(eps, 1 - eps)``, shaped like the logits) or None for gates without noise.
    """

    gate_params: dict[str, np.ndarray]
    x: np.ndarray | None
    c: np.ndarray
    noise: np.ndarray | None


@functools.lru_cache(maxsize=2)
def _x(batch: int, input_dim: int) -> np.ndarray:
    """``x (batch, input_dim)``, standard normal; cached (a router-scale x takes a second to draw), read-only."""
    x = np.random.default_rng(SEED_X).standard_normal((batch, input_dim))
    x.setflags(write=False)
    return x


def make_inputs(case: Case) -> CaseInputs:
    """The inputs of ``case``; the same numbers for every framework, device and impl."""
    config = case.config()
    gate_params = config.init_params(SEED_PARAMS)
    x = _x(case.batch, case.input_dim) if case.per_example else None
    c = np.random.default_rng(SEED_C).standard_normal(case.weights_shape)
    noise = None
    rng = np.random.default_rng(SEED_NOISE)
    if case.gate == "topk":
        noise = rng.standard_normal(case.weights_shape)
    elif case.gate == "hard_concrete":
        # kept inside (0, 1) after rounding to the case's dtype (bfloat16's spacing just below 1 is 2^-8)
        eps = max(spec.HARD_CONCRETE_EPS, 2.0**-8 if case.dtype == "bfloat16" else 0.0)
        noise = rng.uniform(eps, 1 - eps, case.weights_shape)
        # checked once here: the timed calls pass check_noise=False (the check reads u, a host sync on a GPU)
        rounded = cast_like(noise, case.dtype)
        spec.check_unit_interval_open("noise", float(rounded.min()), float(rounded.max()))
    return CaseInputs(gate_params, x, c, noise)


def cast_like(array: np.ndarray | None, dtype: str) -> np.ndarray | None:
    """Round float64 values to ``dtype`` and back to float64 (bfloat16 by truncating float32 mantissas)."""
    if array is None:
        return None
    if dtype == "bfloat16":
        f32 = np.asarray(array, dtype=np.float32)
        bits = f32.view(np.uint32)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)  # round to nearest even
        return rounded.view(np.float32).astype(np.float64)
    return np.asarray(array, dtype=dtype).astype(np.float64)


def reference_bytes(case: Case) -> int:
    """Bytes the DSelect-k ``reference`` impl needs: its ``(b, k, n, m)`` tensor, held several times.

    One tensor is ``itemsize * b * k * n * m``; the forward holds about 3 (where, prod input, output), a backward
    about 6.
    """
    itemsize = {"float64": 8, "float32": 4, "bfloat16": 2}[case.dtype]
    m = spec.num_code_bits(case.experts)
    one = itemsize * (case.batch or 1) * case.k * case.experts * m
    return one * (3 if case.mode == "fwd" else 6)
