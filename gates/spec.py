"""Framework-free specification of the gates.

Everything that is not a tensor operation lives here, once, for both frameworks: gate names, hyper-parameters and
their checks, the DSelect-k binary codes, the hard-concrete constants, parameter names and shapes, and the seeded
initialisation. ``gates.torch`` and ``gates.tf`` only create weights from these specs and write the forwards.

Axis legend used in shapes throughout the package:
``b`` batch, ``p`` routing-input width, ``n`` experts, ``k`` selectors / non-zeros, ``m = ceil(log2 n)`` code bits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GATE_NAMES: tuple[str, ...] = (
    "softmax", "topk", "dselect_k", "hard_concrete", "sigmoid_topk", "sparsemax", "entmax15", "remoe",
)
# Gates whose weights are a function of one logit per expert (``logits (n,)`` static, ``x @ kernel + bias``
# per-example): they take the router regularisers ``z_loss`` (ST-MoE) and ``switch_balance`` (Switch Transformer).
LOGIT_GATES: tuple[str, ...] = ("softmax", "topk", "sigmoid_topk", "sparsemax", "entmax15", "remoe")
# Top-k-style gates whose selection can tie (the accuracy checks leave such rows out).
SELECTING_GATES: tuple[str, ...] = ("topk", "sigmoid_topk")

# Hard concrete (Louizos, Welling & Kingma 2018): stretch limits (gamma, zeta) and temperature beta.
HARD_CONCRETE_LIMITS: tuple[float, float] = (-0.1, 1.1)
HARD_CONCRETE_BETA: float = 2.0 / 3.0
# Uniform noise for a training sample is drawn from U(eps, 1 - eps) so that log(u) and log(1 - u) stay finite.
HARD_CONCRETE_EPS: float = 1e-6
# DSelect-k entropy regulariser: H(r) = -sum r log(r + ENTROPY_EPS).
ENTROPY_EPS: float = 1e-6
# Top-k load balancing: CV^2 = var / (mean^2 + CV_EPS), population variance.
CV_EPS: float = 1e-10

# Implementations of DSelect-k in the frameworks ("auto" picks the default); other gates have one, "auto".
# "triton" (fused Triton kernels, PyTorch on CUDA) exists in PyTorch only.
DSELECT_K_IMPLS: tuple[str, ...] = ("auto", "factorized", "bitwise", "reference", "triton")
TORCH_ONLY_IMPLS: tuple[str, ...] = ("triton",)

# Hyper-parameters each gate accepts, with defaults. Regularisation weights default to 0: a gate's loss is opt-in.
_ROUTER_REGS: dict[str, float] = {"z_loss": 0.0, "switch_balance": 0.0}
# sigmoid_topk: Megatron-Core's default bias update rate (moe_router_bias_update_rate).
SIGMOID_TOPK_BIAS_RATE: float = 1e-3
# ReMoE (Wang, Chen & Zhu, ICLR 2025): L1 coefficient multiplier alpha and initial coefficient.
REMOE_L1_ALPHA: float = 1.2
REMOE_L1_INIT: float = 1e-8
HPARAM_DEFAULTS: dict[str, dict[str, Any]] = {
    "softmax": {**_ROUTER_REGS},
    "topk": {"noisy": False, "load_balance": 0.0, **_ROUTER_REGS},
    "dselect_k": {"gamma": 1.0, "entropy_reg": 0.0, "entropy_schedule": None, "regularizer_reduction": "mean"},
    "hard_concrete": {
        "beta": HARD_CONCRETE_BETA, "limits": HARD_CONCRETE_LIMITS, "l0_reg": 0.0, "regularizer_reduction": "mean",
    },
    "sigmoid_topk": {"normalize": True, "bias_rate": SIGMOID_TOPK_BIAS_RATE, "bias_centered": False, **_ROUTER_REGS},
    "sparsemax": {**_ROUTER_REGS},
    "entmax15": {**_ROUTER_REGS},
    "remoe": {
        "target_sparsity": None, "l1_alpha": REMOE_L1_ALPHA, "l1_init": REMOE_L1_INIT, "l1_balanced": False,
        **_ROUTER_REGS,
    },
}
# How a per-example regulariser (DSelect-k's entropy and unreachable penalty, hard concrete's L0) becomes one number:
# its batch mean (gatebench's default: the weight does not depend on the batch size) or its batch sum (the
# reference DSelect-k layer's; ``sum = batch size * mean``).
REGULARIZER_REDUCTIONS: tuple[str, ...] = ("mean", "sum")


# --------------------------------------------------------------------------------------------------------------
# Argument checks. Each raises ValueError naming the argument, what was expected and what was given.
# --------------------------------------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_gate_name(name: Any) -> str:
    if name not in GATE_NAMES:
        raise ValueError(f"name: expected one of {', '.join(GATE_NAMES)}; got {name!r}")
    return name


def check_num_experts(num_experts: Any) -> int:
    if not _is_int(num_experts) or num_experts < 2:
        raise ValueError(f"num_experts: expected an integer >= 2; got {num_experts!r}")
    return int(num_experts)


def check_k(k: Any, num_experts: int) -> int:
    if not _is_int(k) or not 1 <= k <= num_experts:
        raise ValueError(f"k: expected an integer in [1, num_experts={num_experts}]; got {k!r}")
    return int(k)


def check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name}: expected a positive number; got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a positive finite number; got {value!r}")
    return float(value)


def check_nonnegative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name}: expected a number >= 0; got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite number >= 0; got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(choices)}; got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected True or False; got {value!r}")
    return bool(value)


def check_schedule(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise ValueError(f"{name}: expected None or a callable of the 1-based count of training calls; got {value!r}")
    return value


def check_impl(gate: str, impl: Any, framework: str) -> str:
    allowed = DSELECT_K_IMPLS if gate == "dselect_k" else ("auto",)
    if framework != "torch":
        allowed = tuple(a for a in allowed if a not in TORCH_ONLY_IMPLS)
    if impl not in allowed:
        raise ValueError(f"impl: expected one of {', '.join(allowed)} for gate {gate!r} in {framework}; got {impl!r}")
    return impl


def check_limits(limits: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in limits)
    except (TypeError, ValueError):
        raise ValueError(f"limits: expected a pair (low, high) with low < 0 and high > 1; got {limits!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < 0.0 and hi > 1.0):
        raise ValueError(f"limits: expected a pair (low, high) with low < 0 and high > 1; got {limits!r}")
    return lo, hi


def check_input_dim(input_dim: Any) -> int | None:
    if input_dim is None:
        return None
    if not _is_int(input_dim) or input_dim < 1:
        raise ValueError(f"input_dim: expected None (static gate) or an integer >= 1; got {input_dim!r}")
    return int(input_dim)


def check_last_dim(name: str, shape: Sequence[int | None], expected: int) -> None:
    shape = tuple(shape)
    if len(shape) == 0 or shape[-1] != expected:
        raise ValueError(f"{name}: expected last dimension {expected}; got shape {shape}")


def check_min_rank(name: str, shape: Sequence[int | None], rank: int, legend: str) -> None:
    if len(tuple(shape)) < rank:
        raise ValueError(f"{name}: expected shape {legend} (rank >= {rank}); got shape {tuple(shape)}")


def check_same_shape(name: str, shape: Sequence[int | None], expected: Sequence[int | None], of: str) -> None:
    if tuple(shape) != tuple(expected):
        raise ValueError(f"{name}: expected the shape of {of}, {tuple(expected)}; got {tuple(shape)}")


def check_unit_interval_open(name: str, lo: float, hi: float) -> None:
    """``lo`` and ``hi`` are the smallest and largest value of the array ``name``."""
    if not (lo > 0.0 and hi < 1.0):
        raise ValueError(f"{name}: expected values in the open interval (0, 1); got values in [{lo}, {hi}]")


def check_finite_array(name: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name}: expected finite values; got {bad} non-finite of {np.size(array)}")


DTYPES: tuple[str, ...] = ("float32", "float64", "bfloat16")
# Floating dtypes a gate's routing input may have; a module casts its input to the gate's dtype.
FLOAT_DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")


def dtype_name(dtype: Any) -> str:
    """The name of a dtype given by name, NumPy type or dtype, ``torch.float32`` or ``tf.float32`` (no import)."""
    if isinstance(dtype, str):
        return dtype
    if isinstance(dtype, np.dtype) or (isinstance(dtype, type) and issubclass(dtype, np.generic)):
        return np.dtype(dtype).name
    text = str(dtype)
    if text.startswith("torch."):  # torch.float32
        return text.removeprefix("torch.")
    name = getattr(dtype, "name", None)  # tf.float32, keras dtype policies
    return name if isinstance(name, str) else text


def check_dtype(dtype: Any) -> str:
    """A gate's parameter dtype: its name, or a NumPy, PyTorch or TensorFlow dtype object of that name."""
    name = dtype_name(dtype)
    if name not in DTYPES:
        raise ValueError(f"dtype: expected one of {', '.join(DTYPES)}; got {dtype!r}")
    return name


def type_name(value: Any) -> str:
    """``numpy.ndarray``, ``list``, ``torch.Tensor``: the type of ``value`` as an error message names it."""
    cls = type(value)
    module = cls.__module__.split(".")[0]
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def check_tensor(name: str, value: Any, is_tensor: bool, tensor_type: str, dtype: Any = None) -> None:
    """``value`` is a tensor of the framework (``is_tensor``, ``tensor_type`` its name) with a floating dtype
    (``FLOAT_DTYPES``). Reads only the type and dtype: no values, no device sync."""
    if not is_tensor:
        raise ValueError(f"{name}: expected a {tensor_type}; got {type_name(value)}")
    got = dtype_name(dtype)
    if got not in FLOAT_DTYPES:
        raise ValueError(f"{name}: expected a floating-point tensor ({', '.join(FLOAT_DTYPES)}); got dtype {got}")


def device_error(device: Any, available: Sequence[str], cause: Any) -> ValueError:
    """The error of ``make_gate(..., device=device)`` for a device that does not exist here."""
    return ValueError(f"device: expected a device available here ({', '.join(available)}); got {device!r} ({cause})")


# DSelect-k's smooth step ``-2 t^3 / gamma^3 + 3 t / (2 gamma) + 1/2`` on ``|t| < gamma / 2`` must stay finite in
# float32 (and bfloat16, the same exponent range; float32 max 3.4e38): its coefficient ``2 / gamma^3`` needs
# ``gamma > 1.8e-13`` and ``t^3 <= gamma^3 / 8`` needs ``gamma < 1.4e13``. (In float64 alone, ``gamma^3`` overflows
# beyond 5.6e102: ``gamma=1e300`` was an OverflowError.) gatebench accepts the round range within.
GAMMA_RANGE: tuple[float, float] = (1e-12, 1e12)


def check_gamma(gamma: Any) -> float:
    """DSelect-k's smooth-step width: a positive finite number in ``GAMMA_RANGE`` (its cube stays finite)."""
    gamma = check_positive("gamma", gamma)
    lo, hi = GAMMA_RANGE
    if not lo <= gamma <= hi:
        raise ValueError(f"gamma: expected a number in [{lo:g}, {hi:g}] (gamma^3 must stay finite); got {gamma!r}")
    return gamma


# --------------------------------------------------------------------------------------------------------------
# DSelect-k codes.
# --------------------------------------------------------------------------------------------------------------
def num_code_bits(num_experts: int) -> int:
    """``m = ceil(log2 n)``: the number of bits of a DSelect-k selector."""
    num_experts = check_num_experts(num_experts)
    return max(1, (num_experts - 1).bit_length())


def is_power_of_two(num_experts: int) -> bool:
    return num_experts & (num_experts - 1) == 0


def binary_codes(num_experts: int) -> np.ndarray:
    """``(n, m)`` 0/1 matrix: row ``i`` is the ``m``-bit code of ``i``, most significant bit first."""
    m = num_code_bits(num_experts)
    shifts = np.arange(m - 1, -1, -1)
    return ((np.arange(num_experts)[:, None] >> shifts[None, :]) & 1).astype(np.int8)


# --------------------------------------------------------------------------------------------------------------
# Gate configuration: hyper-parameters, parameter names, shapes and initialisation.
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateConfig:
    """What a gate is: its kind, sizes and hyper-parameters (checked on construction).

    ``input_dim=None`` is a static (task-only) gate whose logits are free parameters; an integer makes a
    per-example gate whose logits are ``x @ kernel + bias`` for ``x`` of shape ``(b, input_dim)``.
    """

    name: str
    num_experts: int
    k: int
    input_dim: int | None = None
    hparams: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_gate_name(self.name)
        n = check_num_experts(self.num_experts)
        check_k(self.k, n)
        check_input_dim(self.input_dim)
        defaults = HPARAM_DEFAULTS[self.name]
        unknown = sorted(set(self.hparams) - set(defaults))
        if unknown:
            allowed = ", ".join(sorted(defaults)) or "none"
            raise ValueError(
                f"hparams: expected only {allowed} for gate {self.name!r}; got unknown {', '.join(unknown)}"
            )
        merged = {**defaults, **self.hparams}
        if "regularizer_reduction" in merged:
            check_choice("regularizer_reduction", merged["regularizer_reduction"], REGULARIZER_REDUCTIONS)
        if self.name == "dselect_k":
            merged["gamma"] = check_gamma(merged["gamma"])
            merged["entropy_reg"] = check_nonnegative("entropy_reg", merged["entropy_reg"])
            if check_schedule("entropy_schedule", merged["entropy_schedule"]) is not None and merged["entropy_reg"]:
                raise ValueError(
                    f"entropy_reg: expected 0 with an entropy_schedule (the schedule gives the weight); "
                    f"got {merged['entropy_reg']!r}"
                )
        elif self.name == "hard_concrete":
            merged["beta"] = check_positive("beta", merged["beta"])
            merged["limits"] = check_limits(merged["limits"])
            merged["l0_reg"] = check_nonnegative("l0_reg", merged["l0_reg"])
        elif self.name == "topk":
            merged["noisy"] = check_bool("noisy", merged["noisy"])
            merged["load_balance"] = check_nonnegative("load_balance", merged["load_balance"])
        else:
            _check_new_gate_hparams(self.name, self.num_experts, self.k, merged)
        if self.name in LOGIT_GATES:
            merged["z_loss"] = check_nonnegative("z_loss", merged["z_loss"])
            merged["switch_balance"] = check_nonnegative("switch_balance", merged["switch_balance"])
        object.__setattr__(self, "hparams", merged)

    @property
    def per_example(self) -> bool:
        return self.input_dim is not None

    @property
    def target_sparsity(self) -> float:
        """ReMoE's target fraction of zero weights: ``target_sparsity``, by default ``1 - k / n``."""
        target = self.hparams.get("target_sparsity")
        return 1.0 - self.k / self.num_experts if target is None else target

    @property
    def num_bits(self) -> int:
        return num_code_bits(self.num_experts)

    def check_input(self, shape: Sequence[int | None] | None) -> None:
        """Check the shape of a gate's input ``x`` (``None`` when the gate is called without one)."""
        if self.per_example:
            if shape is None or len(tuple(shape)) != 2:
                got = None if shape is None else tuple(shape)
                raise ValueError(f"x: expected an array of shape (batch, {self.input_dim}); got {got}")
            check_last_dim("x", shape, self.input_dim)
        elif shape is not None:
            raise ValueError(f"x: a static gate takes no input (input_dim=None); got shape {tuple(shape)}")

    def check_call(self, x_shape: Sequence[int | None] | None, noise_shape: Sequence[int | None] | None) -> None:
        """Check a gate call's input and noise shapes; the noise has the shape of the weights."""
        self.check_input(x_shape)
        if noise_shape is not None:
            want = (tuple(x_shape)[0], self.num_experts) if self.per_example else (self.num_experts,)
            check_same_shape("noise", noise_shape, want, "the weights")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameter names and shapes, identical in both frameworks."""
        n, k, p = self.num_experts, self.k, self.input_dim
        if self.name == "dselect_k":
            m = self.num_bits
            if p is None:
                return {"z_logits": (k, m), "w_logits": (k,)}
            return {"z_kernel": (p, k * m), "z_bias": (k * m,), "w_kernel": (p, k), "w_bias": (k,)}
        shapes = {"logits": (n,)} if p is None else {"kernel": (p, n), "bias": (n,)}
        if self.name == "topk" and self.hparams["noisy"]:
            shapes.update({"noise_logits": (n,)} if p is None else {"noise_kernel": (p, n)})
        if self.name == "hard_concrete":
            shapes = {("log_alpha" if key == "logits" else key): s for key, s in shapes.items()}
        return shapes

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Non-trainable state, updated by an explicit step and not by gradients: sigmoid_topk's per-expert
        ``expert_bias (n,)`` (selection only), ReMoE's L1 coefficient ``l1_coef ()``. Other gates have none."""
        if self.name == "sigmoid_topk":
            return {"expert_bias": (self.num_experts,)}
        if self.name == "remoe":
            return {"l1_coef": ()}
        return {}

    def init_state(self) -> dict[str, np.ndarray]:
        """Initial state (float64): a zero bias; ReMoE's coefficient ``l1_init``."""
        out = {}
        for key, shape in self.state_shapes().items():
            out[key] = np.full(shape, self.hparams["l1_init"] if key == "l1_coef" else 0.0)
        return out

    def check_state(self, state: Mapping[str, Any], lead: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
        """Validate a state dict (names, shapes with an optional leading ``lead``, finiteness; ``l1_coef > 0``)
        and return float64 copies."""
        shapes = self.state_shapes()
        if set(state) != set(shapes):
            raise ValueError(f"state: expected exactly the keys {sorted(shapes)}; got {sorted(state)}")
        out = {}
        for key, shape in shapes.items():
            arr = np.asarray(state[key], dtype=np.float64)
            if arr.shape != lead + shape:
                raise ValueError(f"state[{key!r}]: expected shape {lead + shape}; got {arr.shape}")
            check_finite_array(f"state[{key!r}]", arr)
            if key == "l1_coef" and not np.all(arr > 0):
                raise ValueError(f"state['l1_coef']: expected positive values; got minimum {float(arr.min())}")
            out[key] = arr
        return out

    def init_params(self, rng: np.random.Generator | int | None = 0) -> dict[str, np.ndarray]:
        """Initial parameters as float64 NumPy arrays, drawn from a seeded generator in a fixed order.

        DSelect-k (paper and reference layer): ``z`` parameters ``~ U(-gamma/100, gamma/100)`` so every bit starts
        in the middle of the smooth-step band, ``w`` parameters ``~ U(-0.05, 0.05)``: training starts near
        ``q = 1/n``. Other gates: static logits ``~ U(-0.05, 0.05)``; per-example kernels
        ``~ U(-1/sqrt(p), 1/sqrt(p))`` (the usual fan-in rule), biases 0; Top-k noise parameters 0 (Shazeer et al.).
        """
        rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
        out: dict[str, np.ndarray] = {}
        for key, shape in self.param_shapes().items():
            if key.startswith("z_"):
                bound = self.hparams["gamma"] / 100.0
                out[key] = rng.uniform(-bound, bound, size=shape)
            elif key.startswith("w_") or key in ("logits", "log_alpha"):
                out[key] = rng.uniform(-0.05, 0.05, size=shape)
            elif key == "kernel":
                bound = 1.0 / math.sqrt(self.input_dim or 1)
                out[key] = rng.uniform(-bound, bound, size=shape)
            else:  # bias, noise_logits, noise_kernel
                out[key] = np.zeros(shape)
        return out

    def check_params(self, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Validate a parameter dict (names, shapes, finiteness) and return float64 copies."""
        shapes = self.param_shapes()
        missing, extra = sorted(set(shapes) - set(params)), sorted(set(params) - set(shapes))
        if missing or extra:
            raise ValueError(
                f"params: expected exactly the keys {sorted(shapes)}; missing {missing}, unexpected {extra}"
            )
        out = {}
        for key, shape in shapes.items():
            arr = np.asarray(params[key], dtype=np.float64)
            if arr.shape != shape:
                raise ValueError(f"params[{key!r}]: expected shape {shape}; got {arr.shape}")
            check_finite_array(f"params[{key!r}]", arr)
            out[key] = arr
        return out


def _check_new_gate_hparams(name: str, n: int, k: int, merged: dict[str, Any]) -> None:
    """The hyper-parameters of sigmoid_topk and ReMoE, checked in place (sparsemax and entmax15 have only the
    router regularisers)."""
    if name == "sigmoid_topk":
        merged["normalize"] = check_bool("normalize", merged["normalize"])
        merged["bias_centered"] = check_bool("bias_centered", merged["bias_centered"])
        merged["bias_rate"] = check_nonnegative("bias_rate", merged["bias_rate"])
    elif name == "remoe":
        target = merged["target_sparsity"]
        if target is not None:
            ok = not isinstance(target, bool) and isinstance(target, (int, float, np.floating, np.integer))
            if not ok or not 0.0 <= float(target) < 1.0:
                raise ValueError(f"target_sparsity: expected None (1 - k/n) or a number in [0, 1); got {target!r}")
            merged["target_sparsity"] = float(target)
        merged["l1_alpha"] = check_positive("l1_alpha", merged["l1_alpha"])
        if merged["l1_alpha"] <= 1.0:
            raise ValueError(f"l1_alpha: expected a number > 1; got {merged['l1_alpha']!r}")
        merged["l1_init"] = check_positive("l1_init", merged["l1_init"])
        merged["l1_balanced"] = check_bool("l1_balanced", merged["l1_balanced"])


def make_config(name: str, num_experts: int, k: int, input_dim: int | None = None, **hparams: Any) -> GateConfig:
    return GateConfig(name=name, num_experts=num_experts, k=k, input_dim=input_dim, hparams=hparams)
