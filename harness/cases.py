"""Timing cases: what is measured (a frozen record, like ``torch.utils.benchmark``'s ``TaskSpec``), the seeded NumPy
inputs every framework sees, and the accuracy tolerances. Framework free.

A case is one cell of a suite's grid: ``gate x framework x device x impl x mode x gating x shape x dtype``.

* ``gating``: ``"per_example"`` times ``gate(x)`` with ``x (batch, input_dim)``, projection included;
  ``"static"`` times ``gate()`` (weights ``(experts,)``), so ``batch`` and ``input_dim`` are None.
* ``impl``: ``"eager"`` (default gate; DSelect-k's factorized path), ``"compiled"`` (``torch.compile`` /
  ``tf.function(jit_compile=True)``), and for ``dselect_k`` only ``"bitwise"``, ``"reference"`` and (PyTorch on a
  GPU only) ``"triton"``: the gate built with ``make_gate(..., impl=...)``.
* ``mode``: ``"fwd"`` (inference: eval mode, no gradient), ``"bwd"`` (the backward of a recorded forward, alone),
  ``"fwdbwd"`` (forward and backward). Training-mode cases compute ``loss = sum(q * c) + regularization_loss``
  for a seeded ``c`` and fixed seeded noise (Top-k's eps, hard concrete's u), gradients w.r.t. every parameter
  and ``x``.
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
    "Case", "CaseInputs", "GATES", "FRAMEWORKS", "DEVICES", "IMPLS", "MODES", "GATINGS", "DTYPES",
    "normalize_device", "make_inputs", "gate_impl", "TOLERANCES", "reference_bytes", "ambiguous_topk_rows",
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

# Seeds of the inputs; append only (changing one changes every recorded number).
SEED_PARAMS, SEED_X, SEED_C, SEED_NOISE = 0, 1, 2, 3

# (weights absolute tolerance, gradient tolerance relative to max(1, max |g_ref|)) by dtype.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-9, 1e-8),
    "float32": (2e-4, 2e-3),
    "bfloat16": (6e-2, 1e-1),
}
# Top-k rows whose k-th and (k+1)-th logits are closer than this (relative) are ambiguous at the dtype's precision.
_TOPK_GAP = {"float64": 1e-9, "float32": 1e-4, "bfloat16": 3e-2}


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
    def from_params(cls, params: Mapping[str, Any]) -> Case:
        """Inverse of ``params()``; unknown keys are a ValueError."""
        known = set(TIMING_KEYS) | {"hparams"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"params: unknown keys {unknown}; expected {sorted(known)}")
        values = {key: params[key] for key in TIMING_KEYS if key in params}
        hp = params.get("hparams") or {}
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


def gate_impl(case: Case) -> str:
    """The ``make_gate(impl=...)`` argument of a case: ``bitwise``/``reference``/``triton`` as named, else
    ``auto``."""
    return case.impl if case.impl in DSELECT_ONLY_IMPLS else "auto"


@dataclass(frozen=True)
class CaseInputs:
    """Seeded float64 NumPy inputs of a case (cast by the adapter to the case's dtype).

    ``params`` (``config.init_params(SEED_PARAMS)``), ``x (batch, input_dim)`` or None, ``c`` shaped like the
    weights (the loss is ``sum(q * c)``), ``noise`` (Top-k: standard normal, hard concrete: uniform in
    ``(eps, 1 - eps)``, shaped like the logits) or None for gates without noise.
    """

    params: dict[str, np.ndarray]
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
    params = config.init_params(SEED_PARAMS)
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
    return CaseInputs(params, x, c, noise)


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


def ambiguous_topk_rows(case: Case, params: Mapping[str, np.ndarray], x: np.ndarray | None,
                        noise: np.ndarray | None, training: bool) -> np.ndarray:
    """Rows of a Top-k case whose k-th and (k+1)-th float64 logits are closer than the dtype can separate.

    Their selected experts can legitimately differ between a float32 gate and the float64 reference, so the
    accuracy check leaves them out (and says how many). Bool ``(batch,)`` or ``(1,)`` for a static gate.
    """
    n, k = case.experts, case.k
    if case.gate != "topk" or k == n:
        return np.zeros(len(x) if case.per_example else 1, dtype=bool)
    if case.per_example:
        logits = x @ params["kernel"] + params["bias"]
        noise_l = x @ params["noise_kernel"] if "noise_kernel" in params else None
    else:
        logits = params["logits"][None, :]
        noise_l = params["noise_logits"][None, :] if "noise_logits" in params else None
    if training and dict(case.hparams).get("noisy") and noise is not None and noise_l is not None:
        logits = logits + np.reshape(noise, logits.shape) * np.logaddexp(0.0, noise_l)
    top = -np.sort(-logits, axis=-1)
    gap = top[:, k - 1] - top[:, k]
    scale = 1.0 + np.abs(top[:, k - 1])
    return gap < _TOPK_GAP[case.dtype] * scale


def reference_bytes(case: Case) -> int:
    """Bytes the DSelect-k ``reference`` impl needs: its ``(b, k, n, m)`` tensor, held several times.

    One tensor is ``itemsize * b * k * n * m``; the forward holds about 3 (where, prod input, output), a backward
    about 6.
    """
    itemsize = {"float64": 8, "float32": 4, "bfloat16": 2}[case.dtype]
    m = spec.num_code_bits(case.experts)
    one = itemsize * (case.batch or 1) * case.k * case.experts * m
    return one * (3 if case.mode == "fwd" else 6)


def evaluate_accuracy(case: Case, params: Mapping[str, np.ndarray], x: np.ndarray | None,
                      noise: np.ndarray | None, weights: np.ndarray, grads: Mapping[str, np.ndarray] | None = None,
                      grads_ref: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Compare a case's ``weights`` with ``gates.reference`` and its gradients with float64 ones.

    The weights are test-time ones for ``fwd`` cases, training ones (with ``noise``) for backward modes.
    Per-example weights are compared on their first ``CHECK_ROWS`` rows (rows are independent; the NumPy
    reference of DSelect-k builds a ``(b, k, n, m)`` tensor, too big at router scale); gradients on all of them.
    ``params``, ``x`` and ``noise`` are the values the gate actually used (already rounded to its dtype), so the only
    difference left is the arithmetic. Returns ``max_abs_err`` (weights, ambiguous Top-k rows left out),
    ``max_grad_err`` (relative, see ``adapters.compare_grads``; None without gradients), ``ambiguous_rows``,
    ``ok`` and, when not ok, ``error`` (what failed, by how much, against which tolerance).
    """
    from gates import reference
    from harness.adapters import compare_grads

    w_tol, g_tol = TOLERANCES[case.dtype]
    if case.per_example:  # rows are independent: the reference sees the first CHECK_ROWS of them
        x, weights = x[:CHECK_ROWS], np.asarray(weights)[:CHECK_ROWS]
        noise = None if noise is None else noise[:CHECK_ROWS]
    want = reference.gate_forward(case.config(), dict(params), x, training=case.training,
                                  noise=noise if case.training else None).weights
    got = np.asarray(weights, dtype=np.float64)
    if got.shape != want.shape:
        return {"ok": False, "max_abs_err": None, "max_grad_err": None, "ambiguous_rows": 0,
                "error": f"accuracy: weights have shape {got.shape}; expected {want.shape}"}
    amb = ambiguous_topk_rows(case, params, x, noise, training=case.training)
    if case.per_example:
        diff = np.abs(got - want)[~amb]
    else:
        diff = np.abs(got - want) if not amb.any() else np.zeros(0)
    max_abs = float(np.max(diff, initial=0.0)) if np.all(np.isfinite(diff)) else float("inf")
    out: dict[str, Any] = {"max_abs_err": max_abs, "max_grad_err": None, "ambiguous_rows": int(amb.sum())}
    errors = []
    if not max_abs <= w_tol:
        errors.append(f"accuracy: weights differ from gates.reference by {max_abs:.3g} (tolerance {w_tol:g})")
    if grads is not None and grads_ref is not None:
        g_err, where = compare_grads(dict(grads), dict(grads_ref))
        out["max_grad_err"] = g_err
        if not g_err <= g_tol:
            errors.append(
                f"accuracy: gradient of {where!r} differs from float64 autograd by {g_err:.3g} relative "
                f"(tolerance {g_tol:g})"
            )
    out["ok"] = not errors
    if errors:
        out["error"] = "; ".join(errors)
    return out


# Hard-concrete rows with a stretched gate this close to a clip limit (0 or 1) sit on a kink of the loss.
_CLIP_MARGIN = 1e-4


def near_clip_rows(case: Case, params: Mapping[str, np.ndarray], x: np.ndarray | None,
                   noise: np.ndarray | None) -> np.ndarray:
    """Rows of a hard-concrete training case with a stretched gate within ``_CLIP_MARGIN`` of 0 or 1.

    The clip is not differentiable there: a finite difference straddles the kink, and float32 and float64 may land
    on different sides. The gradient checks leave those rows out (bool ``(batch,)``, or ``(1,)`` static).
    """
    rows = len(x) if case.per_example else 1
    if case.gate != "hard_concrete" or noise is None:
        return np.zeros(rows, dtype=bool)
    h = case.config().hparams
    log_alpha = x @ params["kernel"] + params["bias"] if case.per_example else params["log_alpha"][None, :]
    u = np.reshape(noise, log_alpha.shape)
    s = 1.0 / (1.0 + np.exp(-(np.log(u) - np.log1p(-u) + log_alpha) / h["beta"]))
    lo, hi = h["limits"]
    stretched = s * (hi - lo) + lo
    near = (np.abs(stretched) < _CLIP_MARGIN) | (np.abs(stretched - 1.0) < _CLIP_MARGIN)
    return near.any(axis=-1)


def check_c(case: Case, inputs: CaseInputs) -> np.ndarray:
    """The loss weights ``c`` of the gradient check: ``inputs.c`` with the rows on a kink of the loss zeroed
    (ambiguous Top-k rows, hard-concrete rows at a clip limit; for a static gate, all of ``c``)."""
    if case.gate not in ("topk", "hard_concrete"):
        return inputs.c.copy()
    params = {k: cast_like(v, case.dtype) for k, v in inputs.params.items()}
    x = cast_like(inputs.x, case.dtype)
    if case.gate == "topk":
        amb = ambiguous_topk_rows(case, params, x, inputs.noise, training=True)
    else:
        amb = near_clip_rows(case, params, x, inputs.noise)
    c = inputs.c.copy()
    if case.per_example:
        c[amb] = 0.0
    elif amb.any():
        c[:] = 0.0
    return c


FD_TOLERANCE = 1e-5
CHECK_ROWS = 256  # rows of a per-example case that the NumPy reference recomputes


def finite_difference_error(case: Case, params: Mapping[str, np.ndarray], x: np.ndarray | None,
                            noise: np.ndarray | None, c: np.ndarray, grads64: Mapping[str, np.ndarray],
                            eps: float = 1e-6, directions: int = 2) -> float:
    """Check float64 framework gradients against central finite differences of ``gates.reference``.

    For seeded random directions ``v`` over the parameters (and ``x``), compares ``<grad, v>`` with
    ``(L(theta + eps v) - L(theta - eps v)) / (2 eps)`` where ``L = sum(q * c) + regularization`` is computed by
    the NumPy reference in training mode with the same noise. This makes the gradient check independent of the
    framework's own code. Returns the largest ``|<grad, v> - fd| / max(1, |fd|)``.
    """
    from gates import reference

    config = case.config()
    names = sorted(grads64)

    def loss(values: Mapping[str, np.ndarray]) -> float:
        p = {k: values[k] for k in params}
        out = reference.gate_forward(config, p, values.get("x"), training=True, noise=noise)
        return float(np.sum(out.weights * c) + out.regularization)

    base = {**{k: np.asarray(v, dtype=np.float64) for k, v in params.items()}}
    if x is not None:
        base["x"] = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(SEED_NOISE + 1)
    worst = 0.0
    for _ in range(directions):
        v = {k: rng.standard_normal(base[k].shape) for k in names}
        plus = {k: base[k] + eps * v[k] if k in v else base[k] for k in base}
        minus = {k: base[k] - eps * v[k] if k in v else base[k] for k in base}
        fd = (loss(plus) - loss(minus)) / (2 * eps)
        dd = float(sum(np.sum(np.asarray(grads64[k]) * v[k]) for k in names))
        worst = max(worst, abs(dd - fd) / max(1.0, abs(fd)))
    return worst


def add_finite_difference_check(result: dict[str, Any], case: Case, params: Mapping[str, np.ndarray],
                                x: np.ndarray | None, noise: np.ndarray | None, c: np.ndarray,
                                grads64: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """``result`` of ``evaluate_accuracy`` plus ``fd_grad_err`` (see ``finite_difference_error``) and its verdict."""
    err = finite_difference_error(case, params, x, noise, c, grads64)
    result["fd_grad_err"] = err
    if not err <= FD_TOLERANCE:
        msg = (f"accuracy: float64 gradient differs from finite differences of gates.reference by {err:.3g} "
               f"relative (tolerance {FD_TOLERANCE:g})")
        result["error"] = f"{result['error']}; {msg}" if result.get("error") else msg
        result["ok"] = False
    return result
