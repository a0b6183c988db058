"""Many recovery runs trained at once, framework-free: the batch of runs, its stacked inputs and its results.

A recovery run is ``steps`` Adam steps on tensors of a few hundred numbers, so its time is framework overhead (one
dispatch per operation), not arithmetic. ``train_batched_torch`` and ``train_batched_tf`` train ``R`` runs of one
gate together: every array gets a leading run axis ``R`` (one seed's data per run, or one trial's configuration per
run), the runs' losses are summed (the runs share no parameter, so each run's gradient is its own loss's), and the
per-run optimiser knobs ``RUN_KNOBS`` are tensors of shape ``(R, 1, ...)``. Everything else of the problem is
shared: runs whose problems differ elsewhere are different batches (``batch_key``).

Static gates are ``R * T`` stacked gates (the recipe's ``stacked=True``: each gate's regulariser its own, summed);
a per-example gate sees ``R * B`` rows, each run's kernels applied to its own rows (``RowsOf``), its batch-mean
regulariser scaled by ``R`` (the sum of the runs' means). Terms that mix the rows of a batch (Top-k's load
balancing, the Switch loss, sigmoid_topk's bias and ReMoE's coefficient, which read the batch's load) would mix
runs: such per-example runs train one at a time (``batchable``).

The results are one ``TrainResult`` per run, equal to the one-run loop's within float rounding (a test checks it);
``train_ms`` is the batch's wall time divided by ``R``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .data import PlantedData
from .problem import RecoveryProblem
from .steps import TrainResult, initial_params, initial_state

# Knobs that may differ between the runs of a batch: they enter only the optimiser, as per-run tensors.
RUN_KNOBS: tuple[str, ...] = ("lr", "adam_beta1", "adam_beta2", "adam_eps")


def batch_key(problem: RecoveryProblem) -> tuple[Any, ...]:
    """What the runs of one batch share: every knob but ``RUN_KNOBS``."""
    return tuple((key, value) for key, value in problem.to_dict().items() if key not in RUN_KNOBS)


def batchable(problem: RecoveryProblem, gate: str) -> bool:
    """Whether runs of ``gate`` on ``problem`` can share a batch: always for static gates; per-example unless the
    gate has a term over the rows of a batch (load balancing, the Switch loss, a load-driven state)."""
    if problem.gating == "static":
        return True
    cfg = problem.gate_config(gate)
    h = cfg.hparams
    return not (cfg.state_shapes() or h.get("load_balance", 0) > 0 or h.get("switch_balance", 0) > 0)


class RunBatch:
    """``R`` runs of ``gate``: ``datas`` (one ``PlantedData`` per run, problems equal but for ``RUN_KNOBS``)."""

    def __init__(self, datas: Sequence[PlantedData], gate: str) -> None:
        if not datas:
            raise ValueError("datas: expected at least one run; got none")
        keys = {batch_key(d.problem) for d in datas}
        if len(keys) > 1:
            raise ValueError(f"datas: expected problems that differ only in {', '.join(RUN_KNOBS)}; got "
                             f"{len(keys)} different problems")
        self.datas, self.gate, self.size = list(datas), gate, len(datas)
        self.problem = datas[0].problem
        if not batchable(self.problem, gate):
            raise ValueError(f"gate: {gate!r} with {self.problem.gating} gating mixes the rows of a batch; "
                             "train its runs one at a time")
        self.cfg = self.problem.gate_config(gate)
        pr = self.problem
        self.needs_x = pr.gating == "per_example" or pr.experts_mode == "learned"
        self._runs = np.arange(self.size)[:, None]
        self._batches = np.stack([d.batches for d in datas])  # (R, steps, B)
        self._x = np.stack([d.x_train for d in datas]) if self.needs_x else None  # (R, N, p)
        self._f = np.stack([d.f_train for d in datas]) if pr.experts_mode == "known" else None  # (R, N, n)
        self._y = np.stack([d.y_train for d in datas])  # (R, N, T)
        self._noise = [d.gate_noise(gate) for d in datas]
        # Per-run optimiser numbers (R,), float64: lr, b1, b2, eps, and 1 - b1, 1 - b2 computed in float64 as the
        # one-run loop's Python floats are.
        self.hyper = self._hyper()

    def _hyper(self) -> dict[str, np.ndarray]:
        get = {key: np.array([getattr(d.problem, key) for d in self.datas], dtype=np.float64) for key in RUN_KNOBS}
        return {"lr": get["lr"], "b1": get["adam_beta1"], "b2": get["adam_beta2"], "eps": get["adam_eps"],
                "1-b1": 1.0 - get["adam_beta1"], "1-b2": 1.0 - get["adam_beta2"]}

    def corrections(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Adam's bias corrections ``(1 - b1^t, 1 - b2^t)`` per run, float64 (``steps.adam_corrections``)."""
        t = step + 1
        return 1.0 - self.hyper["b1"] ** t, 1.0 - self.hyper["b2"] ** t

    def initial_params(self) -> dict[str, np.ndarray]:
        """Every trainable array with a leading run axis (``steps.initial_params`` of each run, stacked)."""
        per_run = [initial_params(d, self.gate) for d in self.datas]
        return {key: np.stack([p[key] for p in per_run]) for key in per_run[0]}

    def initial_state(self) -> dict[str, np.ndarray]:
        """The gates' state, stacked: ``(R * T, ...)`` for static gates (``R * T`` stacked gates)."""
        per_run = [initial_state(d, self.gate) for d in self.datas]
        return {key: np.concatenate([s[key] for s in per_run]) for key in per_run[0]}

    def step_inputs(self, step: int) -> dict[str, np.ndarray | None]:
        """``steps.step_inputs`` of every run at ``step``, stacked: ``x (R, B, p)``, ``f (R, B, n)``,
        ``y (R, B, T)``, ``u (R * T, n)`` static or ``(R * B, n)`` per-example."""
        idx = self._batches[:, step]  # (R, B)
        u = None if self._noise[0] is None else np.concatenate([noise[step] for noise in self._noise])
        return {
            "x": None if self._x is None else self._x[self._runs, idx],
            "f": None if self._f is None else self._f[self._runs, idx],
            "y": self._y[self._runs, idx],
            "u": u,
        }

    def eval_inputs(self) -> dict[str, np.ndarray | None]:
        """The runs' test sets, stacked (``steps.eval_inputs``): ``x (R, M, p)``, ``f (R, M, n)``, ``y (R, M, T)``."""
        pr = self.problem
        return {
            "x": np.stack([d.x_test for d in self.datas]) if self.needs_x else None,
            "f": np.stack([d.f_test for d in self.datas]) if pr.experts_mode == "known" else None,
            "y": np.stack([d.y_test for d in self.datas]),
            "u": None,
        }

    def reg_scale(self) -> int:
        """A per-example gate's batch-mean regulariser over ``R * B`` rows is ``1 / R`` of the runs' summed means."""
        mean = self.cfg.hparams.get("regularizer_reduction", "mean") == "mean"
        return self.size if self.problem.gating == "per_example" and mean else 1


def split_results(batch: RunBatch, record: dict[str, Any]) -> list[TrainResult]:
    """One ``TrainResult`` per run from the batch's record (NumPy, float64, leading run axis on every array;
    ``history (E, R, rows, n)``; ``state`` arrays ``(R * T, ...)`` static)."""
    R, out = batch.size, []
    state = {key: v.reshape(R, -1, *v.shape[1:]) if batch.problem.gating == "static" else v
             for key, v in record["state"].items()}
    for r in range(R):
        out.append(TrainResult(
            eval_steps=np.asarray(record["eval_steps"]), history=record["history"][:, r],
            final_weights=record["final_weights"][r], test_mse=float(record["test_mse"][r]),
            final_loss=float(record["final_loss"][r]),
            first_grads={key: g[r] for key, g in record["first_grads"].items()},
            learned_f_test=None if record["learned_f_test"] is None else record["learned_f_test"][r],
            train_ms=record["train_ms"] / R, final_params={key: p[r] for key, p in record["final_params"].items()},
            initial_selection=record["initial_selection"][r], final_state={key: v[r] for key, v in state.items()},
        ))
    return out


class RowsOf:
    """The framework module ``F`` for the gate recipe on ``R`` runs' rows: routing inputs ``x (R, B, p)``, each run's
    kernels ``(R, p, d)`` and biases ``(R, 1, d)``; every head is flattened to ``(R * B, d)``, so the rest of the
    recipe sees one per-example batch of ``R * B`` rows."""

    def __init__(self, F: Any) -> None:
        self._F = F
        self.OPS = F.OPS._replace(heads=self._heads)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._F, name)

    def _heads(self, x: Any, heads: Sequence[tuple[Any, Any]]) -> list[Any]:
        return [self._F.OPS.reshape(out, (-1, int(out.shape[-1]))) for out in self._F.OPS.heads(x, heads)]
