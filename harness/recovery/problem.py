"""The planted-expert recovery problem: one frozen, validated definition shared by both frameworks.

A problem fixes everything a run depends on except the gate, the framework and the seed: the data (experts,
tasks, clusters, noise, sizes) and the training (optimiser, learning rate, steps, batch, regularisers, gamma).
Hyper-parameters live here, not per gate: every gate of a comparison trains under the same definition.

Two settings (``gating``):

- ``"static"`` (multi-task): ``T`` tasks share ``n`` experts; task ``t`` has its own static gate ``q_t`` and its
  prediction is ``y_t(x) = sum_e q_{t,e} f_e(x)``. Tasks come in ``C`` clusters; the tasks of a cluster share a
  planted support of ``k`` experts (with their own positive coefficients).
- ``"per_example"``: one task; inputs come from ``C`` clusters and each cluster's target uses its own planted
  support, so one per-example gate ``q(x)`` must route by the input.

Experts (``experts_mode``): ``"known"`` (the planted experts are the model's fixed experts: only the gates
train) or ``"learned"`` (the model's experts are trained too, then matched to the planted ones by output
correlation before supports are compared).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from gates import spec

GATINGS: tuple[str, ...] = ("static", "per_example")
EXPERTS_MODES: tuple[str, ...] = ("known", "learned")
EXPERT_KINDS: tuple[str, ...] = ("linear", "mlp")
DTYPES: tuple[str, ...] = ("float32", "float64")


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}; got {value!r}")
    return value


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(allowed)}; got {value!r}")
    return value


@dataclass(frozen=True)
class RecoveryProblem:
    """A planted-expert problem and its training recipe (validated on construction; ``ValueError`` if bad).

    Data knobs: ``experts`` (n), ``k`` (planted support size), ``tasks`` (T, static only; 1 for per-example),
    ``clusters`` (C: clusters of tasks for static, of inputs for per-example), ``input_dim`` (p, width of ``x``),
    ``samples`` (training examples) and ``test_samples``, ``noise`` (standard deviation of the target noise; the
    experts' outputs have unit variance), ``expert_correlation`` (rho in [0, 1): pairwise correlation of the
    planted experts' parameters), ``expert_kind`` (``linear``: ``f_e(x) = a_e . x``; ``mlp``:
    ``f_e(x) = v_e . tanh(W_e x)`` with ``hidden`` units), ``cluster_separation`` (per-example cluster means are
    ``N(0, separation^2 I)``, inputs are mean + ``N(0, I)``).

    Training knobs, identical for every gate and framework: Adam written out by hand from one spec
    (``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``, ``p -= lr * m_hat / (sqrt(v_hat) + adam_eps)``),
    constant learning rate ``lr``, ``steps`` mini-batch steps of ``batch`` examples, supports recorded every
    ``eval_every`` steps, DSelect-k's ``gamma`` and ``entropy_reg``, hard concrete's ``l0_reg``, float ``dtype``.
    ``dselect_z_init``: DSelect-k's selector logits start ``~ U(-c * gamma, c * gamma)``; ``c = 0.01`` is the
    paper's (and ``gates``') initialisation, other values exist to study it. ``topk_noisy``: Top-k's training
    noise (Shazeer et al.: ``l + eps * softplus(noise_l)``, ``eps`` seeded NumPy, ``PlantedData.gate_noise``);
    ``load_balance``: Top-k's CV^2 load-balancing weight (each task's gate its own). Both off by default.

    The generators are a reconstruction of the DSelect-k paper's synthetic setting from its description, not the
    paper's own code or data.
    """

    gating: str = "static"
    experts: int = 16
    k: int = 4
    tasks: int = 32
    clusters: int = 8
    experts_mode: str = "known"
    expert_kind: str = "linear"
    hidden: int = 8
    input_dim: int = 32
    samples: int = 1024
    test_samples: int = 512
    noise: float = 0.1
    expert_correlation: float = 0.0
    cluster_separation: float = 3.0
    # Training.
    steps: int = 600
    batch: int = 64
    lr: float = 0.05
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    eval_every: int = 5
    gamma: float = 1.0
    entropy_reg: float = 0.001
    dselect_z_init: float = 0.01
    l0_reg: float = 0.01
    topk_noisy: bool = False
    load_balance: float = 0.0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        _check_choice("gating", self.gating, GATINGS)
        _check_choice("experts_mode", self.experts_mode, EXPERTS_MODES)
        _check_choice("expert_kind", self.expert_kind, EXPERT_KINDS)
        _check_choice("dtype", self.dtype, DTYPES)
        n = _check_int("experts", self.experts, 2)
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= n:
            raise ValueError(f"k: expected an integer in [1, experts={n}]; got {self.k!r}")
        _check_int("tasks", self.tasks, 1)
        _check_int("clusters", self.clusters, 1)
        if self.gating == "static" and self.clusters > self.tasks:
            raise ValueError(
                f"clusters: expected at most tasks={self.tasks} clusters of tasks (static gating); "
                f"got {self.clusters}"
            )
        if self.gating == "per_example" and self.tasks != 1:
            raise ValueError(f"tasks: expected 1 for per_example gating (clusters are of inputs); got {self.tasks}")
        for name in ("hidden", "input_dim", "samples", "test_samples", "steps", "batch", "eval_every"):
            _check_int(name, getattr(self, name), 1)
        if not isinstance(self.topk_noisy, bool):
            raise ValueError(f"topk_noisy: expected True or False; got {self.topk_noisy!r}")
        for name in ("noise", "cluster_separation", "entropy_reg", "l0_reg", "load_balance"):
            spec.check_nonnegative(name, getattr(self, name))
        for name in ("lr", "adam_eps", "gamma", "dselect_z_init"):
            spec.check_positive(name, getattr(self, name))
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{name}: expected a number in [0, 1); got {value!r}")
        rho = self.expert_correlation
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not (math.isfinite(rho) and 0 <= rho < 1):
            raise ValueError(f"expert_correlation: expected a number in [0, 1); got {rho!r}")
        if self.batch > self.samples:
            raise ValueError(f"batch: expected at most samples={self.samples}; got {self.batch}")

    # ----------------------------------------------------------------------------------------------------------
    @property
    def num_supports(self) -> int:
        """Rows of the planted-support matrix: tasks (static) or input clusters (per-example)."""
        return self.tasks if self.gating == "static" else self.clusters

    def gate_hparams(self, gate: str) -> dict[str, Any]:
        """The hyper-parameters of ``gate`` that this problem fixes (gamma and entropy for DSelect-k, L0 weight
        for hard concrete, training noise and CV^2 load balancing for Top-k; the other gates run on their
        ``gates`` defaults)."""
        spec.check_gate_name(gate)
        if gate == "topk":
            return {"noisy": self.topk_noisy, "load_balance": self.load_balance}
        if gate == "dselect_k":
            return {"gamma": self.gamma, "entropy_reg": self.entropy_reg}
        if gate == "hard_concrete":
            return {"l0_reg": self.l0_reg}
        return {}

    def gate_config(self, gate: str) -> spec.GateConfig:
        """The gate of one task (static) or the one routing gate (per-example)."""
        input_dim = None if self.gating == "static" else self.input_dim
        return spec.make_config(gate, self.experts, self.k, input_dim, **self.gate_hparams(gate))

    def replace(self, **changes: Any) -> RecoveryProblem:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RecoveryProblem:
        """Build from a dict, rejecting unknown keys by name."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"problem: unknown keys {', '.join(unknown)} (allowed: {', '.join(sorted(names))})")
        return cls(**values)


# Knobs that differ from the defaults in the small configuration used by `make demo` (< 1 minute).
QUICK: dict[str, Any] = {"experts": 8, "k": 2, "tasks": 8, "clusters": 4, "steps": 150, "samples": 512}
