"""The prediction problem: the data, the model and the training recipe, one frozen, validated definition.

The model (identical in both frameworks, ``model_torch`` and ``model_tf``): ``n = experts`` shared experts, each a
two-layer ReLU MLP ``x (B, p) -> (B, expert_out)`` with ``expert_hidden`` units; per task ``t`` one gate (``static``:
task-only logits, the multi-gate MoE of MultiMNIST; ``per_example``: the gate reads the image) mixing the experts'
outputs, and a tower ``ReLU(mix @ W1 + b1) @ W2 + b2`` to the task's classes. Loss: the sum over tasks of the batch
mean cross-entropy, plus the task gates' regularisers. Adam is the recovery loops' one, written out by hand
(``harness.recovery.steps.adam_corrections``), constant learning rate.

Parameters (names shared by both frameworks, drawn by ``init_params`` from seeded NumPy streams): ``expert/w1
(n, p, H)``, ``expert/b1 (n, H)``, ``expert/w2 (n, H, D)``, ``expert/b2 (n, D)``; ``tower/<t>/w1 (D, Ht)``,
``tower/<t>/b1``, ``tower/<t>/w2 (Ht, C_t)``, ``tower/<t>/b2``; gates: static ``gate/<name>`` with a leading task axis
(``GateConfig.param_shapes`` of each task's gate, stacked), per-example ``gate/<t>/<name>``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gates import spec

from .data import DigitsSpec, check_tasks

__all__ = ["GATINGS", "PredictionProblem", "init_params", "init_state", "batches", "gate_noise", "STREAMS"]

GATINGS: tuple[str, ...] = ("static", "per_example")
# Independent NumPy streams of a run, ``default_rng([seed, stream])``.
STREAMS: dict[str, int] = {"experts": 10, "towers": 11, "gates": 12, "batches": 13, "noise": 14}


def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}; got {value!r}")
    return int(value)


def _num(name: str, value: Any, positive: bool) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise ValueError(f"{name}: expected a finite number {'> 0' if positive else '>= 0'}; got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PredictionProblem:
    """Data (``tasks`` as a comma-separated string, ``train``/``val``/``test`` sizes, ``shift``, ``data_seed``),
    model (``gating``, ``experts``, ``k``, ``expert_hidden``, ``expert_out``, ``tower_hidden``), training (``lr``,
    ``steps``, ``batch``, Adam's ``adam_beta1``/``adam_beta2``/``adam_eps``, ``dtype``, ``eval_every``) and the gates'
    knobs (DSelect-k ``gamma``, ``entropy_reg``, ``dselect_z_init`` (selector logits ``U(-c gamma, c gamma)``);
    hard concrete ``l0_reg``; Top-k ``load_balance``). Every field is a column of the rows."""

    tasks: str = "left,right"
    train: int = 4000
    val: int = 1000
    test: int = 1000
    shift: int = 2
    data_seed: int = 0
    gating: str = "static"
    experts: int = 8
    k: int = 2
    expert_hidden: int = 32
    expert_out: int = 16
    tower_hidden: int = 16
    lr: float = 0.003
    steps: int = 1000
    batch: int = 64
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    dtype: str = "float32"
    eval_every: int = 100
    gamma: float = 1.0
    entropy_reg: float = 0.001
    dselect_z_init: float = 0.01
    l0_reg: float = 0.001
    load_balance: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", ",".join(check_tasks(self.tasks)))
        self.digits()  # checks the data knobs
        if self.gating not in GATINGS:
            raise ValueError(f"gating: expected one of {', '.join(GATINGS)}; got {self.gating!r}")
        for name in ("experts", "expert_hidden", "expert_out", "tower_hidden", "steps", "batch", "eval_every"):
            _int(name, getattr(self, name), 1)
        if not 1 <= _int("k", self.k, 1) <= self.experts:
            raise ValueError(f"k: expected an integer in 1..experts ({self.experts}); got {self.k!r}")
        if self.batch > self.train:
            raise ValueError(f"batch: expected at most train ({self.train}); got {self.batch!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: expected float32 or float64; got {self.dtype!r}")
        for name in ("lr", "adam_eps", "gamma", "dselect_z_init"):
            _num(name, getattr(self, name), positive=True)
        for name in ("entropy_reg", "l0_reg", "load_balance"):
            _num(name, getattr(self, name), positive=False)
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= _num(name, getattr(self, name), positive=False) < 1:
                raise ValueError(f"{name}: expected a number in [0, 1); got {getattr(self, name)!r}")

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(self.tasks.split(","))

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def digits(self) -> DigitsSpec:
        return DigitsSpec(self.task_names, self.train, self.val, self.test, self.shift, self.data_seed)

    def gate_config(self, gate: str) -> spec.GateConfig:
        """The gate of one task: task-only (static) or reading the image (per-example)."""
        hparams: dict[str, Any] = {}
        if gate == "dselect_k":
            hparams = {"gamma": self.gamma, "entropy_reg": self.entropy_reg}
        elif gate == "hard_concrete":
            hparams = {"l0_reg": self.l0_reg}
        elif gate == "topk":
            hparams = {"load_balance": self.load_balance}
        input_dim = None if self.gating == "static" else self.digits().input_dim
        return spec.make_config(gate, self.experts, self.k, input_dim, **hparams)

    def replace(self, **changes: Any) -> PredictionProblem:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PredictionProblem:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"problem: expected only {', '.join(sorted(names))}; got unknown {', '.join(unknown)}")
        return cls(**values)


def _rng(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([seed, STREAMS[stream]])


def _uniform(rng: np.random.Generator, fan_in: int, shape: tuple[int, ...]) -> np.ndarray:
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape)


def _gate_params(problem: PredictionProblem, gate: str, seed: int) -> dict[str, np.ndarray]:
    cfg, rng = problem.gate_config(gate), _rng(seed, "gates")
    z_scale = problem.dselect_z_init / 0.01  # the gates' init draws U(-gamma/100, gamma/100)
    per_task = [cfg.init_params(rng) for _ in problem.task_names]
    for params in per_task:
        for key in ("z_logits", "z_kernel", "z_bias"):
            if key in params:
                params[key] = params[key] * z_scale
    if problem.gating == "static":
        return {f"gate/{key}": np.stack([p[key] for p in per_task]) for key in per_task[0]}
    return {f"gate/{t}/{key}": value for t, params in enumerate(per_task) for key, value in params.items()}


def init_params(problem: PredictionProblem, gate: str, seed: int) -> dict[str, np.ndarray]:
    """Every trainable array of a run (float64), in a fixed order: experts, towers, gates (module docstring)."""
    n, p, h, d = problem.experts, problem.digits().input_dim, problem.expert_hidden, problem.expert_out
    rng = _rng(seed, "experts")
    out = {"expert/w1": _uniform(rng, p, (n, p, h)), "expert/b1": np.zeros((n, h)),
           "expert/w2": _uniform(rng, h, (n, h, d)), "expert/b2": np.zeros((n, d))}
    rng, ht = _rng(seed, "towers"), problem.tower_hidden
    for t, classes in enumerate(problem.digits().classes):
        out.update({f"tower/{t}/w1": _uniform(rng, d, (d, ht)), f"tower/{t}/b1": np.zeros(ht),
                    f"tower/{t}/w2": _uniform(rng, ht, (ht, classes)), f"tower/{t}/b2": np.zeros(classes)})
    out.update(_gate_params(problem, gate, seed))
    return out


def init_state(problem: PredictionProblem, gate: str) -> dict[str, np.ndarray]:
    """The gates' non-trainable state (sigmoid_topk's bias, ReMoE's L1 coefficient): static stacked over tasks
    (``<name>``), per-example one per task (``<t>/<name>``); empty for the other gates."""
    state = problem.gate_config(gate).init_state()
    if problem.gating == "static":
        return {key: np.broadcast_to(v, (problem.num_tasks, *v.shape)).copy() for key, v in state.items()}
    return {f"{t}/{key}": v.copy() for t in range(problem.num_tasks) for key, v in state.items()}


def batches(problem: PredictionProblem, seed: int) -> np.ndarray:
    """``(steps, batch)`` training indices: shuffled epochs, one after another."""
    rng, need = _rng(seed, "batches"), problem.steps * problem.batch
    epochs = -(-need // problem.train)
    return np.concatenate([rng.permutation(problem.train) for _ in range(epochs)])[:need].reshape(
        problem.steps, problem.batch)


def gate_noise(problem: PredictionProblem, gate: str, seed: int) -> np.ndarray | None:
    """Hard concrete's training noise ``u ~ U(eps, 1 - eps)`` for every step: ``(steps, T, n)`` static,
    ``(steps, T, batch, n)`` per-example; ``None`` for the other gates."""
    if gate != "hard_concrete":
        return None
    shape = (problem.steps, problem.num_tasks, problem.experts)
    if problem.gating == "per_example":
        shape = (problem.steps, problem.num_tasks, problem.batch, problem.experts)
    eps = spec.HARD_CONCRETE_EPS
    return _rng(seed, "noise").uniform(eps, 1 - eps, size=shape)
