"""The recovery training loop in TensorFlow. Reads line by line against ``train_torch.py``.

Same model, loss, gate recipe (``gates.recipe`` on ``gates.tf``), regularisers and hand-written Adam as the PyTorch
loop (see its docstring); the train step and the evaluation are ``tf.function``s traced once per run (fixed shapes).
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np
import tensorflow as tf

from gates import recipe, spec
from gates import tf as G

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

_DTYPES = {"float32": tf.float32, "float64": tf.float64}


def gate_weights(cfg: spec.GateConfig, params: dict[str, tf.Variable], x: tf.Tensor | None, training: bool,
                 noise: tf.Tensor | None = None, calls: Any = None,
                 state: dict[str, tf.Variable] | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Weights ``(T, n)`` of ``T`` static gates (``x=None``, parameters with a leading task axis) or ``(B, n)`` of
    one per-example gate, and the regulariser (0 outside training; the ``T`` static gates' summed): the gate
    recipe of ``gates.tf.Gate`` (``gates.recipe``), noisy Top-k and load balancing included. ``calls``: the 1-based
    training step, read by a DSelect-k entropy schedule. Heads on ``x`` are one matmul each (``fuse_heads=False``):
    the arithmetic the recorded recovery results were computed with. ``state``: the gate's non-trainable state
    (``steps.initial_state``)."""
    return recipe.gate_forward(G, cfg, params, x, training=training, noise=noise, stacked=x is None, calls=calls,
                               fuse_heads=False, state=state)


def update_state(cfg: spec.GateConfig, state: dict[str, tf.Variable], q: tf.Tensor, stacked: bool) -> None:
    """The gate's explicit step, once per training step, from that step's training weights ``q``: sigmoid_topk's
    bias (each static task's gate its own load, one row; per-example the batch's ``expert_load``), ReMoE's L1
    coefficient (each static task's sparsity; per-example the batch's)."""
    h, q = cfg.hparams, tf.stop_gradient(q)
    if cfg.name == "sigmoid_topk":
        load = tf.cast(q != 0, q.dtype) if stacked else G.expert_load(q)
        bias = state["expert_bias"]
        bias.assign(G.sigmoid_topk_bias_step(tf.convert_to_tensor(bias), load, h["bias_rate"], h["bias_centered"]))
    elif cfg.name == "remoe":
        sparsity = tf.reduce_mean(tf.cast(q == 0, q.dtype), axis=-1) if stacked else G.remoe_sparsity(q)
        coef = state["l1_coef"]
        coef.assign(G.remoe_l1_step(tf.convert_to_tensor(coef), sparsity, h["l1_alpha"], cfg.target_sparsity))


def expert_outputs(x: tf.Tensor, params: dict[str, tf.Variable]) -> tf.Tensor:
    """Learned experts, ``x (B, p) -> (B, n)``: linear ``x @ a`` or MLP ``v_e . tanh(x W_e)``."""
    if "expert/a" in params:
        return tf.matmul(x, params["expert/a"])
    hidden = tf.tanh(tf.einsum("bp,eph->beh", x, params["expert/w"]))  # (B, n, h)
    return tf.einsum("beh,eh->be", hidden, params["expert/v"])


def _tensor(a: np.ndarray | None, dtype: tf.DType) -> tf.Tensor | None:
    return None if a is None else tf.constant(a, dtype=dtype)


def train(data: PlantedData, gate: str) -> TrainResult:
    """Train ``gate`` on ``data`` and record its selections (see ``steps.TrainResult``)."""
    pr = data.problem
    cfg, dtype = pr.gate_config(gate), _DTYPES[pr.dtype]
    params = {key: tf.Variable(v, dtype=dtype, name=key.replace("/", "_"))
              for key, v in initial_params(data, gate).items()}
    gate_params = {key.split("/", 1)[1]: v for key, v in params.items() if key.startswith("gate/")}
    moments = {key: (tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for key, v in params.items()}
    state = {key: tf.Variable(v, dtype=dtype, trainable=False) for key, v in initial_state(data, gate).items()}

    tensor = functools.partial(_tensor, dtype=dtype)
    def forward(inputs: dict[str, tf.Tensor | None], training: bool, calls=None) -> tuple[tf.Tensor, tf.Tensor]:
        x, u = inputs["x"], inputs["u"]
        f = inputs["f"] if inputs["f"] is not None else expert_outputs(x, params)  # (B, n)
        q, reg = gate_weights(cfg, gate_params, None if pr.gating == "static" else x, training, u, calls, state)
        pred = tf.matmul(f, q, transpose_b=True) if pr.gating == "static" else tf.reduce_sum(q * f, -1, keepdims=True)
        return tf.reduce_sum(tf.reduce_mean((pred - inputs["y"]) ** 2, axis=0)) + reg, q

    @tf.function
    def train_step(inputs: dict[str, tf.Tensor | None], c1: tf.Tensor, c2: tf.Tensor, calls: tf.Tensor):
        with tf.GradientTape() as tape:
            loss, q_train = forward(inputs, training=True, calls=calls)
        grads = tape.gradient(loss, list(params.values()))
        for (key, p), g in zip(params.items(), grads, strict=True):
            m, v = moments[key]
            m.assign(pr.adam_beta1 * m + (1 - pr.adam_beta1) * g)
            v.assign(pr.adam_beta2 * v + (1 - pr.adam_beta2) * g * g)
            p.assign_sub(pr.lr * (m / c1) / (tf.sqrt(v / c2) + pr.adam_eps))
        update_state(cfg, state, q_train, stacked=pr.gating == "static")
        return loss, grads

    @tf.function
    def evaluate(inputs: dict[str, tf.Tensor | None]):
        return forward(inputs, training=False)

    eval_steps, history, first_grads, loss = [], [], {}, tf.zeros(())
    test = {key: tensor(v) for key, v in eval_inputs(data).items()}
    _, q = evaluate(test)
    initial_selection = select(np.asarray(q.numpy(), dtype=np.float64), gate, pr.k)  # before the first step
    start = time.perf_counter()
    for step in range(pr.steps):
        c1, c2 = adam_corrections(pr, step)
        loss, grads = train_step({key: tensor(v) for key, v in step_inputs(data, step, gate).items()},
                                 tf.constant(c1, dtype), tf.constant(c2, dtype), tf.constant(step + 1, dtype))
        if step == 0:
            first_grads = {key: np.asarray(g.numpy(), dtype=np.float64) for key, g in zip(params, grads, strict=True)}
        if is_eval_step(pr, step):
            _, q = evaluate(test)
            eval_steps.append(step + 1)
            history.append(select(np.asarray(q.numpy(), dtype=np.float64), gate, pr.k))
    train_ms = (time.perf_counter() - start) * 1e3
    test_loss, q = evaluate(test)
    learned = None if test["f"] is not None else np.asarray(expert_outputs(test["x"], params).numpy(), np.float64)
    return TrainResult(
        eval_steps=np.asarray(eval_steps), history=np.stack(history), final_weights=np.asarray(q.numpy(), np.float64),
        test_mse=float(test_loss) / pr.tasks, final_loss=float(loss), first_grads=first_grads,
        learned_f_test=learned, train_ms=train_ms,
        final_params={key: np.asarray(p.numpy(), dtype=np.float64) for key, p in params.items()},
        initial_selection=initial_selection, final_state={k: v.numpy().astype(np.float64) for k, v in state.items()},
    )
