"""The steps of a prediction run, framework-free, as both training loops take them: the NumPy inputs of each step
and of an evaluation, the record of a run (``PredictionResult``) and what the gates did (``gate_usage``).

``model_torch.train`` and ``model_tf.train`` take the same ``RunInputs`` and return a ``PredictionResult``; they
read side by side and differ only in tensor syntax. Adam's bias corrections come from
``harness.recovery.steps.adam_corrections`` (float64, computed once, passed to both).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .data import DigitsData
from .problem import PredictionProblem, batches, gate_noise, init_params, init_state

__all__ = ["RunInputs", "PredictionResult", "run_inputs", "step_inputs", "eval_inputs", "is_eval_step",
           "gate_usage", "accuracies"]


@dataclass
class RunInputs:
    """Everything a run reads: the problem, gate, seed, data, evaluation split, initial parameters and state,
    mini-batch indices and hard concrete's noise (``None`` for other gates)."""

    problem: PredictionProblem
    gate: str
    seed: int
    data: DigitsData
    eval_split: str
    params: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    batches: np.ndarray
    noise: np.ndarray | None


@dataclass
class PredictionResult:
    """One run. ``accuracy (T,)`` on the evaluation split; ``usage``: ``gate_usage`` of the test-time gates at the
    end; ``eval_steps (E,)`` with ``nnz_trace (E, T)`` and ``accuracy_trace (E, T)`` (the gates' mean number of
    non-zero weights and the accuracy after those steps); ``first_loss`` and ``first_grads`` of step 1;
    ``final_loss`` of the last step; ``train_ms`` the loop's wall time."""

    accuracy: np.ndarray
    usage: dict[str, np.ndarray]
    eval_steps: np.ndarray
    nnz_trace: np.ndarray
    accuracy_trace: np.ndarray
    first_loss: float
    first_grads: dict[str, np.ndarray]
    final_loss: float
    train_ms: float
    final_params: dict[str, np.ndarray] = field(default_factory=dict)


def run_inputs(problem: PredictionProblem, gate: str, seed: int, data: DigitsData, eval_split: str) -> RunInputs:
    if eval_split not in ("val", "test"):
        raise ValueError(f"eval_split: expected val or test; got {eval_split!r}")
    return RunInputs(problem, gate, int(seed), data, eval_split, init_params(problem, gate, seed),
                     init_state(problem, gate), batches(problem, seed), gate_noise(problem, gate, seed))


def _onehots(y: np.ndarray, classes: tuple[int, ...]) -> list[np.ndarray]:
    return [np.eye(c)[y[:, t]] for t, c in enumerate(classes)]


def step_inputs(inputs: RunInputs, step: int) -> dict[str, object]:
    """Step ``step``'s ``x (B, p)``, ``y`` (one one-hot ``(B, C_t)`` per task) and ``u`` (hard concrete's noise of
    every task's gate, ``(T, n)`` or ``(T, B, n)``; else ``None``)."""
    idx, data = inputs.batches[step], inputs.data
    return {"x": data.x["train"][idx], "y": _onehots(data.y["train"][idx], data.spec.classes),
            "u": None if inputs.noise is None else inputs.noise[step]}


def eval_inputs(inputs: RunInputs) -> dict[str, object]:
    """The evaluation split in the keys of ``step_inputs`` (no noise: test-time gates are deterministic)."""
    data, split = inputs.data, inputs.eval_split
    return {"x": data.x[split], "y": _onehots(data.y[split], data.spec.classes), "u": None}


def is_eval_step(problem: PredictionProblem, step: int) -> bool:
    return (step + 1) % problem.eval_every == 0 or step + 1 == problem.steps


def accuracies(logits: list[np.ndarray], y: np.ndarray) -> np.ndarray:
    """``(T,)`` accuracy of each task's logits ``(N, C_t)`` against labels ``y (N, T)``."""
    return np.array([np.mean(np.argmax(lg, axis=-1) == y[:, t]) for t, lg in enumerate(logits)])


def _entropy(q: np.ndarray) -> np.ndarray:
    total = q.sum(axis=-1, keepdims=True)
    p = np.divide(q, total, out=np.zeros_like(q), where=total > 0)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=-1)


def gate_usage(weights: np.ndarray) -> dict[str, np.ndarray]:
    """What each task's gate does, from its test-time weights ``(T, n)`` (static) or ``(T, N, n)`` (per-example):
    ``nnz (T,)`` mean number of non-zero weights (per example), ``entropy (T,)`` mean entropy of the weights (nats;
    0 = one expert, log n = uniform), ``used (T,)`` experts with a non-zero weight anywhere, ``load_entropy (T,)``
    entropy of the mean weights over examples (how evenly the examples spread over the experts; static: the
    entropy of the weights)."""
    q = np.asarray(weights, dtype=np.float64)
    rows = q if q.ndim == 3 else q[:, None, :]
    nonzero = rows > 0
    return {"nnz": nonzero.sum(-1).mean(-1), "entropy": _entropy(rows).mean(-1),
            "used": nonzero.any(axis=1).sum(-1).astype(np.float64), "load_entropy": _entropy(rows.mean(axis=1))}
