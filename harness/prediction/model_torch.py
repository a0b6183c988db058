"""The prediction model and its training loop in PyTorch. Reads line by line against ``model_tf.py``.

Experts ``f (B, n, D)`` (two ReLU layers each), one gate per task through the gate recipe (``gates.recipe`` on
``gates.torch``; static: the ``T`` task gates stacked, per-example: one gate per task on the image), each task's
mix of the experts' outputs into its tower, cross-entropy summed over tasks plus the gates' regularisers; Adam
written out as in the recovery loops (see ``problem``). One intra-op thread during the loop.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from gates import recipe
from gates import torch as G
from harness.recovery.steps import adam_corrections
from harness.recovery.train_torch import update_state

from .steps import PredictionResult, RunInputs, accuracies, eval_inputs, gate_usage, is_eval_step, step_inputs

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def expert_outputs(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """``x (B, p) -> (B, n, D)``: every expert's ``ReLU(ReLU(x W1 + b1) W2 + b2)``."""
    hidden = torch.relu(torch.einsum("bp,eph->beh", x, params["expert/w1"]) + params["expert/b1"])
    return torch.relu(torch.einsum("beh,ehd->bed", hidden, params["expert/w2"]) + params["expert/b2"])


def task_gates(run: RunInputs, params: dict[str, torch.Tensor], state: dict[str, Any], x: torch.Tensor,
               training: bool, u: torch.Tensor | None, calls: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each task's weights (``(n,)`` static, ``(B, n)`` per-example) and the gates' summed regulariser."""
    cfg, pr = run.problem.gate_config(run.gate), run.problem
    if pr.gating == "static":
        gate_params = {key: params[f"gate/{key}"] for key in cfg.param_shapes()}
        q, reg = recipe.gate_forward(G, cfg, gate_params, None, training=training, noise=u, stacked=True,
                                     calls=calls, state=state)
        return [q[t] for t in range(pr.num_tasks)], reg
    weights, reg = [], torch.zeros((), dtype=x.dtype)
    for t in range(pr.num_tasks):
        gate_params = {key: params[f"gate/{t}/{key}"] for key in cfg.param_shapes()}
        task_state = {key: state[f"{t}/{key}"] for key in cfg.state_shapes()}
        q, r = recipe.gate_forward(G, cfg, gate_params, x, training=training, noise=None if u is None else u[t],
                                   calls=calls, state=task_state)
        weights, reg = weights + [q], reg + r
    return weights, reg


def forward(run: RunInputs, params: dict[str, torch.Tensor], state: dict[str, Any], inputs: dict[str, Any],
            training: bool, calls: Any = None) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """``(loss, logits per task, weights per task)`` of one batch."""
    x, u = inputs["x"], inputs["u"]
    f = expert_outputs(x, params)  # (B, n, D)
    weights, loss = task_gates(run, params, state, x, training, u, calls)
    logits = []
    for t, q in enumerate(weights):
        mix = torch.einsum("bed,e->bd", f, q) if q.dim() == 1 else torch.einsum("bed,be->bd", f, q)
        hidden = torch.relu(mix @ params[f"tower/{t}/w1"] + params[f"tower/{t}/b1"])
        logit = hidden @ params[f"tower/{t}/w2"] + params[f"tower/{t}/b2"]
        loss = loss - (inputs["y"][t] * torch.log_softmax(logit, dim=-1)).sum(dim=-1).mean()
        logits.append(logit)
    return loss, logits, weights


def step_state(run: RunInputs, state: dict[str, Any], weights: list[torch.Tensor]) -> None:
    """The gates' explicit state step (``harness.recovery.train_torch.update_state``), once per training step."""
    cfg = run.problem.gate_config(run.gate)
    if not cfg.state_shapes():
        return
    if run.problem.gating == "static":
        update_state(cfg, state, torch.stack(weights), stacked=True)
        return
    for t, q in enumerate(weights):
        task_state = {key: state[f"{t}/{key}"] for key in cfg.state_shapes()}
        update_state(cfg, task_state, q, stacked=False)
        state.update({f"{t}/{key}": value for key, value in task_state.items()})


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy()


def _evaluate(run: RunInputs, params: dict, state: dict, test: dict) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        _, logits, weights = forward(run, params, state, test, training=False)
    acc = accuracies([_numpy(lg) for lg in logits], run.data.y[run.eval_split])
    return acc, np.stack([_numpy(q) for q in weights])


def train(run: RunInputs) -> PredictionResult:
    """Train the model of ``run`` and evaluate it on ``run.eval_split`` (see ``steps.PredictionResult``)."""
    pr, dtype = run.problem, _DTYPES[run.problem.dtype]
    params = {key: torch.tensor(v, dtype=dtype, requires_grad=True) for key, v in run.params.items()}
    moments = {key: (torch.zeros_like(v), torch.zeros_like(v)) for key, v in params.items()}
    state = {key: torch.tensor(v, dtype=dtype) for key, v in run.state.items()}
    def tensors(inputs: dict[str, Any]) -> dict[str, Any]:
        return {"x": torch.as_tensor(inputs["x"], dtype=dtype), "y": [torch.as_tensor(y, dtype=dtype)
                for y in inputs["y"]], "u": None if inputs["u"] is None else torch.as_tensor(inputs["u"], dtype=dtype)}

    test, trace, first = tensors(eval_inputs(run)), [], {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        for step in range(pr.steps):
            loss, _, weights = forward(run, params, state, tensors(step_inputs(run, step)), True, step + 1)
            grads = torch.autograd.grad(loss, list(params.values()))
            if step == 0:
                first = {"loss": float(loss.detach()),
                         "grads": {k: _numpy(g) for k, g in zip(params, grads, strict=True)}}
            c1, c2 = adam_corrections(pr, step)
            with torch.no_grad():
                for (key, p), g in zip(params.items(), grads, strict=True):
                    m, v = moments[key]
                    m.mul_(pr.adam_beta1).add_((1 - pr.adam_beta1) * g)
                    v.mul_(pr.adam_beta2).add_((1 - pr.adam_beta2) * g * g)
                    p.sub_(pr.lr * (m / c1) / (torch.sqrt(v / c2) + pr.adam_eps))
            step_state(run, state, weights)
            if is_eval_step(pr, step):
                trace.append((step + 1, *_evaluate(run, params, state, test)))
    finally:
        torch.set_num_threads(threads)
    train_ms = (time.perf_counter() - start) * 1e3
    acc, weights = trace[-1][1], trace[-1][2]
    return PredictionResult(
        accuracy=acc, usage=gate_usage(weights), eval_steps=np.array([s for s, _, _ in trace]),
        nnz_trace=np.stack([gate_usage(w)["nnz"] for _, _, w in trace]),
        accuracy_trace=np.stack([a for _, a, _ in trace]),
        first_loss=first["loss"], first_grads=first["grads"], final_loss=float(loss.detach()), train_ms=train_ms,
        final_params={key: _numpy(p) for key, p in params.items()})
