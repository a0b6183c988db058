"""The steps of a recovery run, framework-free, as both training loops take them: the NumPy inputs of each step
and of the evaluation, Adam's bias corrections, which steps are evaluated, the record of a run (``TrainResult``)
and the order in which parameters are named. The loops themselves are ``train_torch`` and ``train_tf``.

``train_torch.train`` and ``train_tf.train`` take a ``PlantedData`` and a gate name and return a ``TrainResult``;
they read side by side and differ only in tensor syntax. Per step ``s`` both see ``step_inputs(data, s)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .data import PlantedData
from .metrics import select


@dataclass
class TrainResult:
    """One training run. ``history (E, R, n)``: the selected sets (in the model's expert order) after each step of
    ``eval_steps (E,)``; rows ``R`` are tasks (static) or test examples (per-example). ``final_weights (R, n)``:
    test-time weights at the end. ``test_mse``: mean squared error of the test targets (noisy: its floor is
    ``noise^2``). ``first_grads``: every parameter's gradient of the first step's loss. ``learned_f_test (M, n)``:
    the trained experts' test outputs (learned experts only). ``train_ms``: wall time of the loop.
    ``final_params``: every trainable array at the end (float64, named as in ``initial_params``).
    ``initial_selection (R, n)``: the selected sets before the first step (the start of the stability trace).
    ``final_state``: the gate's non-trainable state at the end (sigmoid_topk's ``expert_bias``, ReMoE's ``l1_coef``;
    float64, with the task axis for static gates), empty for other gates."""

    eval_steps: np.ndarray
    history: np.ndarray
    final_weights: np.ndarray
    test_mse: float
    final_loss: float
    first_grads: dict[str, np.ndarray]
    learned_f_test: np.ndarray | None
    train_ms: float
    final_params: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)
    initial_selection: np.ndarray | None = None
    final_state: dict[str, np.ndarray] = field(default_factory=dict)


def initial_params(data: PlantedData, gate: str) -> dict[str, np.ndarray]:
    """Every trainable array of a run, in a fixed order: the gate's (``gate/<name>``), then the learned experts'
    (``expert/<name>``) when ``experts_mode == "learned"``."""
    out = {f"gate/{key}": value for key, value in data.init_gate_params(gate).items()}
    if data.problem.experts_mode == "learned":
        out.update({f"expert/{key}": value for key, value in data.init_learned_experts().items()})
    return out


def initial_state(data: PlantedData, gate: str) -> dict[str, np.ndarray]:
    """The gate's initial non-trainable state (``GateConfig.init_state``): one per task, stacked along a leading task
    axis, for static gates; the one routing gate's per-example. Updated once per step by the loops
    (``update_state``), after the optimiser step, from that step's training weights."""
    cfg = data.problem.gate_config(gate)
    state = cfg.init_state()
    if data.problem.gating == "static":
        state = {key: np.broadcast_to(v, (data.problem.tasks, *v.shape)).copy() for key, v in state.items()}
    return state


def step_inputs(data: PlantedData, step: int, gate: str) -> dict[str, np.ndarray | None]:
    """The NumPy inputs of training step ``step``: ``x (B, p)`` (routing input and learned experts' input, else
    ``None``), ``f (B, n)`` (known experts' outputs, else ``None``), ``y (B, T)`` targets and ``u`` (hard concrete's
    uniform noise, ``(T, n)`` static or ``(B, n)`` per-example, else ``None``)."""
    pr, idx = data.problem, data.batches[step]
    needs_x = pr.gating == "per_example" or pr.experts_mode == "learned"
    noise = data.gate_noise(gate)
    return {
        "x": data.x_train[idx] if needs_x else None,
        "f": data.f_train[idx] if pr.experts_mode == "known" else None,
        "y": data.y_train[idx],
        "u": None if noise is None else noise[step],
    }


def eval_inputs(data: PlantedData) -> dict[str, np.ndarray | None]:
    """The test set, in the same keys as ``step_inputs`` (no noise: test-time gates are deterministic)."""
    pr = data.problem
    needs_x = pr.gating == "per_example" or pr.experts_mode == "learned"
    return {
        "x": data.x_test if needs_x else None,
        "f": data.f_test if pr.experts_mode == "known" else None,
        "y": data.y_test,
        "u": None,
    }


def adam_corrections(problem, step: int) -> tuple[float, float]:
    """Adam's bias corrections ``(1 - b1^t, 1 - b2^t)`` for 1-based step ``t``, in Python floats (float64) so that
    both frameworks use the same numbers."""
    t = step + 1
    return 1.0 - problem.adam_beta1**t, 1.0 - problem.adam_beta2**t


def is_eval_step(problem, step: int) -> bool:
    """Selections are recorded after every ``eval_every``-th step and after the last."""
    return (step + 1) % problem.eval_every == 0 or step + 1 == problem.steps


def selection_record(weights: np.ndarray, gate: str, k: int) -> np.ndarray:
    return select(weights, gate, k)
