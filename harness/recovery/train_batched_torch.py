"""``R`` recovery runs of one gate trained at once in PyTorch (see ``batch``). Reads against ``train_torch.py``:
the same model, loss, gate recipe and hand-written Adam, with a leading run axis on every tensor.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from gates import recipe
from gates import torch as G

from .batch import RowsOf, RunBatch, split_results
from .data import PlantedData
from .metrics import select
from .steps import TrainResult, is_eval_step
from .train_torch import _DTYPES, gate_weights, update_state

_ROWS = RowsOf(G)


def expert_outputs(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each run's learned experts on its own inputs, ``x (R, B, p) -> (R, B, n)``."""
    if "expert/a" in params:
        return x @ params["expert/a"]  # (R, p, n)
    hidden = torch.tanh(torch.einsum("rbp,reph->rbeh", x, params["expert/w"]))  # (R, B, n, h)
    return torch.einsum("rbeh,reh->rbe", hidden, params["expert/v"])


class _Model:
    """The ``R`` runs' parameters, state and forward."""

    def __init__(self, batch: RunBatch, dtype: torch.dtype) -> None:
        self.batch, self.dtype, pr = batch, dtype, batch.problem
        self.static, self.R = pr.gating == "static", batch.size
        self.params = {key: torch.tensor(v, dtype=dtype, requires_grad=True)
                       for key, v in batch.initial_params().items()}
        self.gate_params = {key.split("/", 1)[1]: v for key, v in self.params.items() if key.startswith("gate/")}
        self.state = {key: torch.tensor(v, dtype=dtype) for key, v in batch.initial_state().items()}
        self.moments = {key: (torch.zeros_like(v), torch.zeros_like(v)) for key, v in self.params.items()}

    def tensor(self, a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.as_tensor(a, dtype=self.dtype)

    def views(self) -> dict[str, torch.Tensor]:
        """The gate parameters as the recipe takes them: ``R * T`` stacked static gates; per-example biases
        ``(R, 1, d)`` beside kernels ``(R, p, d)`` (``RowsOf``)."""
        if self.static:
            return {key: v.reshape(-1, *v.shape[2:]) for key, v in self.gate_params.items()}
        return {key: v[:, None] if v.ndim == 2 else v for key, v in self.gate_params.items()}

    def forward(self, inputs: dict[str, Any], training: bool,
                calls: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-run mean squared error summed over tasks ``(R,)``, the runs' summed regulariser, and the weights
        flat (``(R * T, n)`` static, ``(R * B, n)`` per-example)."""
        x, u, cfg = inputs["x"], inputs["u"], self.batch.cfg
        f = inputs["f"] if inputs["f"] is not None else expert_outputs(x, self.params)  # (R, B, n)
        F = G if self.static else _ROWS
        q, reg = recipe.gate_forward(F, cfg, self.views(), None if self.static else x, training=training, noise=u,
                                     stacked=self.static, calls=calls, fuse_heads=False, state=self.state)
        qr = q.reshape(self.R, -1, cfg.num_experts)
        pred = f @ qr.transpose(1, 2) if self.static else (qr * f).sum(dim=-1, keepdim=True)  # (R, B, T)
        return ((pred - inputs["y"]) ** 2).mean(dim=1).sum(dim=-1), reg * self.batch.reg_scale(), q

    @torch.no_grad()
    def run_regs(self, inputs: dict[str, Any], calls: int) -> np.ndarray:
        """Each run's own regulariser at this step (the recipe on its slice), for its ``final_loss``."""
        out, u = [], inputs["u"]
        u = None if u is None else u.reshape(self.R, -1, u.shape[-1])
        for r in range(self.R):
            params = {key: v[r] for key, v in self.gate_params.items()}
            state = {key: v.reshape(self.R, -1, *v.shape[1:])[r] for key, v in self.state.items()}
            x = None if self.static else inputs["x"][r]
            _, reg = gate_weights(self.batch.cfg, params, x, True, None if u is None else u[r], calls, state)
            out.append(float(reg))
        return np.asarray(out)


def _adam(model: _Model, grads: Sequence[torch.Tensor], step: int, hyper: dict[str, torch.Tensor]) -> None:
    """One Adam step of every run, its own ``lr``, betas and epsilon (``(R, 1, ...)`` tensors)."""
    c1, c2 = (model.tensor(c) for c in model.batch.corrections(step))
    with torch.no_grad():
        for (key, p), g in zip(model.params.items(), grads, strict=True):
            m, v = model.moments[key]
            shape = (model.R,) + (1,) * (p.ndim - 1)
            h = {name: t.reshape(shape) for name, t in hyper.items()}
            m.mul_(h["b1"]).add_(h["1-b1"] * g)
            v.mul_(h["b2"]).add_(h["1-b2"] * g * g)
            p.sub_(h["lr"] * (m / c1.reshape(shape)) / (torch.sqrt(v / c2.reshape(shape)) + h["eps"]))


def _selections(model: _Model, test: dict[str, Any]) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    with torch.no_grad():
        mse, _, q = model.forward(test, training=False)
    weights = q.reshape(model.R, -1, model.batch.cfg.num_experts).to(torch.float64).numpy()
    return select(weights, model.batch.gate, model.batch.problem.k), mse, weights


def train_batched(datas: Sequence[PlantedData], gate: str) -> list[TrainResult]:
    """Train ``gate`` on every run of ``datas`` at once; one ``TrainResult`` per run (see ``batch``)."""
    batch = RunBatch(datas, gate)
    pr = batch.problem
    model = _Model(batch, _DTYPES[pr.dtype])
    hyper = {name: model.tensor(values) for name, values in batch.hyper.items()}
    test = {key: model.tensor(v) for key, v in batch.eval_inputs().items()}
    record: dict[str, Any] = {"eval_steps": [], "history": [], "first_grads": {}}
    record["initial_selection"] = _selections(model, test)[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        for step in range(pr.steps):
            inputs = {key: model.tensor(v) for key, v in batch.step_inputs(step).items()}
            mse, reg, q_train = model.forward(inputs, training=True, calls=step + 1)
            grads = torch.autograd.grad(mse.sum() + reg, list(model.params.values()))
            if step == 0:
                record["first_grads"] = {key: g.to(torch.float64).numpy()
                                         for key, g in zip(model.params, grads, strict=True)}
            if step + 1 == pr.steps:
                record["final_loss"] = mse.detach().to(torch.float64).numpy() + model.run_regs(inputs, step + 1)
            _adam(model, grads, step, hyper)
            update_state(batch.cfg, model.state, q_train, stacked=pr.gating == "static")
            if is_eval_step(pr, step):
                record["eval_steps"].append(step + 1)
                record["history"].append(_selections(model, test)[0])
    finally:
        torch.set_num_threads(threads)
    record["train_ms"] = (time.perf_counter() - start) * 1e3
    return split_results(batch, _finish(model, test, record))


def _finish(model: _Model, test: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    _, mse, weights = _selections(model, test)
    with torch.no_grad():
        learned = None if test["f"] is not None else expert_outputs(test["x"], model.params)
    record.update(
        history=np.stack(record["history"]), final_weights=weights,
        test_mse=mse.to(torch.float64).numpy() / model.batch.problem.tasks,
        learned_f_test=None if learned is None else learned.to(torch.float64).numpy(),
        final_params={key: p.detach().to(torch.float64).numpy() for key, p in model.params.items()},
        state={key: v.to(torch.float64).numpy() for key, v in model.state.items()},
    )
    return record
