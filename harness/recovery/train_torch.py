"""The recovery training loop in PyTorch. Reads line by line against ``train_tf.py``.

Model: test-time/training expert weights ``q`` from the gate recipe (``gates.recipe`` on ``gates.torch``), one
static gate per task (parameters with a leading task axis ``T``) or one per-example gate on ``x (B, p)``; expert outputs
``f (B, n)`` fixed (known) or computed by trainable experts (learned); predictions ``f @ q.T (B, T)`` (static) or
``sum_e q_e f_e (B, 1)`` (per-example). Loss: mean over the batch of the squared error, summed over tasks, plus
the gates' regularisers (summed over the tasks' gates; averaged over the batch for a per-example gate, as the
gate modules do). Optimiser: Adam written out (see ``RecoveryProblem``).
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np
import torch

from gates import recipe, spec
from gates import torch as G

from .data import PlantedData
from .metrics import select
from .steps import (
    TrainResult,
    adam_corrections,
    eval_inputs,
    initial_params,
    initial_state,
    is_eval_step,
    step_inputs,
)

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def gate_weights(cfg: spec.GateConfig, params: dict[str, torch.Tensor], x: torch.Tensor | None, training: bool,
                 noise: torch.Tensor | None = None, calls: Any = None,
                 state: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``(T, n)`` of ``T`` static gates (``x=None``, parameters with a leading task axis) or ``(B, n)`` of
    one per-example gate, and the regulariser (0 outside training; the ``T`` static gates' summed): the gate
    recipe of ``gates.torch.Gate`` (``gates.recipe``), noisy Top-k and load balancing included. ``calls``: the 1-based
    training step, read by a DSelect-k entropy schedule. Heads on ``x`` are one matmul each (``fuse_heads=False``):
    the arithmetic the recorded recovery results were computed with. ``state``: the gate's non-trainable state
    (``steps.initial_state``)."""
    return recipe.gate_forward(G, cfg, params, x, training=training, noise=noise, stacked=x is None, calls=calls,
                               fuse_heads=False, state=state)


@torch.no_grad()
def update_state(cfg: spec.GateConfig, state: dict[str, torch.Tensor], q: torch.Tensor, stacked: bool) -> None:
    """The gate's explicit step, once per training step, from that step's training weights ``q``: sigmoid_topk's
    bias (each static task's gate its own load, one row; per-example the batch's ``expert_load``), ReMoE's L1
    coefficient (each static task's sparsity; per-example the batch's)."""
    h = cfg.hparams
    if cfg.name == "sigmoid_topk":
        load = (q != 0).to(q.dtype) if stacked else G.expert_load(q)
        state["expert_bias"] = G.sigmoid_topk_bias_step(state["expert_bias"], load, h["bias_rate"],
                                                        h["bias_centered"])
    elif cfg.name == "remoe":
        sparsity = (q == 0).to(q.dtype).mean(dim=-1) if stacked else G.remoe_sparsity(q)
        state["l1_coef"] = G.remoe_l1_step(state["l1_coef"], sparsity, h["l1_alpha"], cfg.target_sparsity)


def expert_outputs(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Learned experts, ``x (B, p) -> (B, n)``: linear ``x @ a`` or MLP ``v_e . tanh(x W_e)``."""
    if "expert/a" in params:
        return x @ params["expert/a"]
    hidden = torch.tanh(torch.einsum("bp,eph->beh", x, params["expert/w"]))  # (B, n, h)
    return torch.einsum("beh,eh->be", hidden, params["expert/v"])


def _tensor(a: np.ndarray | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if a is None else torch.as_tensor(a, dtype=dtype)


def train(data: PlantedData, gate: str) -> TrainResult:
    """Train ``gate`` on ``data`` and record its selections (see ``steps.TrainResult``)."""
    pr = data.problem
    cfg, dtype = pr.gate_config(gate), _DTYPES[pr.dtype]
    params = {key: torch.tensor(v, dtype=dtype, requires_grad=True) for key, v in initial_params(data, gate).items()}
    gate_params = {key.split("/", 1)[1]: v for key, v in params.items() if key.startswith("gate/")}
    moments = {key: (torch.zeros_like(v), torch.zeros_like(v)) for key, v in params.items()}
    state = {key: torch.tensor(v, dtype=dtype) for key, v in initial_state(data, gate).items()}

    tensor = functools.partial(_tensor, dtype=dtype)
    def forward(inputs: dict[str, torch.Tensor | None], training: bool,
                calls: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x, u = inputs["x"], inputs["u"]
        f = inputs["f"] if inputs["f"] is not None else expert_outputs(x, params)  # (B, n)
        q, reg = gate_weights(cfg, gate_params, None if pr.gating == "static" else x, training, u, calls, state)
        pred = f @ q.T if pr.gating == "static" else (q * f).sum(dim=-1, keepdim=True)  # (B, T)
        return ((pred - inputs["y"]) ** 2).mean(dim=0).sum() + reg, q

    eval_steps, history, first_grads, loss = [], [], {}, torch.zeros(())
    test = {key: tensor(v) for key, v in eval_inputs(data).items()}
    with torch.no_grad():
        _, q = forward(test, training=False)
    initial_selection = select(q.to(torch.float64).numpy(), gate, pr.k)  # before the first step
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors of a few hundred numbers: more threads only add synchronisation
    start = time.perf_counter()
    try:
        for step in range(pr.steps):
            inputs = {key: tensor(v) for key, v in step_inputs(data, step, gate).items()}
            loss, q_train = forward(inputs, training=True, calls=step + 1)
            grads = torch.autograd.grad(loss, list(params.values()))
            if step == 0:
                first_grads = {key: g.detach().to(torch.float64).numpy() for key, g in zip(params, grads, strict=True)}
            c1, c2 = adam_corrections(pr, step)
            with torch.no_grad():
                for (key, p), g in zip(params.items(), grads, strict=True):
                    m, v = moments[key]
                    m.mul_(pr.adam_beta1).add_((1 - pr.adam_beta1) * g)
                    v.mul_(pr.adam_beta2).add_((1 - pr.adam_beta2) * g * g)
                    p.sub_(pr.lr * (m / c1) / (torch.sqrt(v / c2) + pr.adam_eps))
            update_state(cfg, state, q_train, stacked=pr.gating == "static")
            if is_eval_step(pr, step):
                with torch.no_grad():
                    _, q = forward(test, training=False)
                eval_steps.append(step + 1)
                history.append(select(q.to(torch.float64).numpy(), gate, pr.k))
    finally:
        torch.set_num_threads(threads)
    train_ms = (time.perf_counter() - start) * 1e3
    with torch.no_grad():
        test_loss, q = forward(test, training=False)
        learned = None if test["f"] is not None else expert_outputs(test["x"], params).to(torch.float64).numpy()
    return TrainResult(
        eval_steps=np.asarray(eval_steps), history=np.stack(history), final_weights=q.to(torch.float64).numpy(),
        test_mse=float(test_loss) / pr.tasks, final_loss=float(loss.detach()), first_grads=first_grads,
        learned_f_test=learned, train_ms=train_ms,
        final_params={key: p.detach().to(torch.float64).numpy() for key, p in params.items()},
        initial_selection=initial_selection, final_state={k: v.to(torch.float64).numpy() for k, v in state.items()},
    )
