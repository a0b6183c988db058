"""The prediction model and its training loop in TensorFlow. Reads line by line against ``model_torch.py``.

Same experts, task gates (``gates.recipe`` on ``gates.tf``), towers, loss and hand-written Adam as the PyTorch
loop (see its docstring); the train step and the evaluation are ``tf.function``s traced once per run (fixed
shapes). One intra-op thread (``harness.recovery.run.limit_threads``, set before TensorFlow initialises).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import tensorflow as tf

from gates import recipe
from gates import tf as G
from harness.recovery.steps import adam_corrections
from harness.recovery.train_tf import update_state

from .steps import PredictionResult, RunInputs, accuracies, eval_inputs, gate_usage, is_eval_step, step_inputs

_DTYPES = {"float32": tf.float32, "float64": tf.float64}


def expert_outputs(x: tf.Tensor, params: dict[str, tf.Variable]) -> tf.Tensor:
    """``x (B, p) -> (B, n, D)``: every expert's ``ReLU(ReLU(x W1 + b1) W2 + b2)``."""
    hidden = tf.nn.relu(tf.einsum("bp,eph->beh", x, params["expert/w1"]) + params["expert/b1"])
    return tf.nn.relu(tf.einsum("beh,ehd->bed", hidden, params["expert/w2"]) + params["expert/b2"])


def task_gates(run: RunInputs, params: dict[str, tf.Variable], state: dict[str, Any], x: tf.Tensor,
               training: bool, u: tf.Tensor | None, calls: Any) -> tuple[list[tf.Tensor], tf.Tensor]:
    """Each task's weights (``(n,)`` static, ``(B, n)`` per-example) and the gates' summed regulariser."""
    cfg, pr = run.problem.gate_config(run.gate), run.problem
    if pr.gating == "static":
        gate_params = {key: params[f"gate/{key}"] for key in cfg.param_shapes()}
        q, reg = recipe.gate_forward(G, cfg, gate_params, None, training=training, noise=u, stacked=True,
                                     calls=calls, state=state)
        return [q[t] for t in range(pr.num_tasks)], reg
    weights, reg = [], tf.zeros((), dtype=x.dtype)
    for t in range(pr.num_tasks):
        gate_params = {key: params[f"gate/{t}/{key}"] for key in cfg.param_shapes()}
        task_state = {key: state[f"{t}/{key}"] for key in cfg.state_shapes()}
        q, r = recipe.gate_forward(G, cfg, gate_params, x, training=training, noise=None if u is None else u[t],
                                   calls=calls, state=task_state)
        weights, reg = weights + [q], reg + r
    return weights, reg


def forward(run: RunInputs, params: dict[str, tf.Variable], state: dict[str, Any], inputs: dict[str, Any],
            training: bool, calls: Any = None) -> tuple[tf.Tensor, list[tf.Tensor], list[tf.Tensor]]:
    """``(loss, logits per task, weights per task)`` of one batch."""
    x, u = inputs["x"], inputs["u"]
    f = expert_outputs(x, params)  # (B, n, D)
    weights, loss = task_gates(run, params, state, x, training, u, calls)
    logits = []
    for t, q in enumerate(weights):
        mix = tf.einsum("bed,e->bd", f, q) if q.shape.rank == 1 else tf.einsum("bed,be->bd", f, q)
        hidden = tf.nn.relu(tf.matmul(mix, params[f"tower/{t}/w1"]) + params[f"tower/{t}/b1"])
        logit = tf.matmul(hidden, params[f"tower/{t}/w2"]) + params[f"tower/{t}/b2"]
        loss = loss - tf.reduce_mean(tf.reduce_sum(inputs["y"][t] * tf.nn.log_softmax(logit, axis=-1), axis=-1))
        logits.append(logit)
    return loss, logits, weights


def step_state(run: RunInputs, state: dict[str, Any], weights: list[tf.Tensor]) -> None:
    """The gates' explicit state step (``harness.recovery.train_tf.update_state``), once per training step."""
    cfg = run.problem.gate_config(run.gate)
    if not cfg.state_shapes():
        return
    if run.problem.gating == "static":
        update_state(cfg, state, tf.stack(weights), stacked=True)
        return
    for t, q in enumerate(weights):
        task_state = {key: state[f"{t}/{key}"] for key in cfg.state_shapes()}
        update_state(cfg, task_state, q, stacked=False)


def _numpy(t: Any) -> np.ndarray:
    return np.asarray(t.numpy(), dtype=np.float64)


def train(run: RunInputs) -> PredictionResult:
    """Train the model of ``run`` and evaluate it on ``run.eval_split`` (see ``steps.PredictionResult``)."""
    pr, dtype = run.problem, _DTYPES[run.problem.dtype]
    params = {key: tf.Variable(v, dtype=dtype, name=key.replace("/", "_")) for key, v in run.params.items()}
    moments = {key: (tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for key, v in params.items()}
    state = {key: tf.Variable(v, dtype=dtype, trainable=False) for key, v in run.state.items()}
    def tensors(inputs: dict[str, Any]) -> dict[str, Any]:
        return {"x": tf.constant(inputs["x"], dtype), "y": [tf.constant(y, dtype) for y in inputs["y"]],
                "u": None if inputs["u"] is None else tf.constant(inputs["u"], dtype)}

    @tf.function
    def train_step(inputs: dict[str, Any], c1: tf.Tensor, c2: tf.Tensor, calls: tf.Tensor):
        with tf.GradientTape() as tape:
            loss, _, weights = forward(run, params, state, inputs, True, calls)
        grads = tape.gradient(loss, list(params.values()))
        for (key, p), g in zip(params.items(), grads, strict=True):
            m, v = moments[key]
            m.assign(pr.adam_beta1 * m + (1 - pr.adam_beta1) * g)
            v.assign(pr.adam_beta2 * v + (1 - pr.adam_beta2) * g * g)
            p.assign_sub(pr.lr * (m / c1) / (tf.sqrt(v / c2) + pr.adam_eps))
        step_state(run, state, weights)
        return loss, grads

    @tf.function
    def evaluate(inputs: dict[str, Any]):
        _, logits, weights = forward(run, params, state, inputs, False)
        return logits, tf.stack(weights)

    def evaluated() -> tuple[np.ndarray, np.ndarray]:
        logits, weights = evaluate(test)
        return accuracies([_numpy(lg) for lg in logits], run.data.y[run.eval_split]), _numpy(weights)

    test, trace, first = tensors(eval_inputs(run)), [], {}
    start = time.perf_counter()
    for step in range(pr.steps):
        c1, c2 = adam_corrections(pr, step)
        loss, grads = train_step(tensors(step_inputs(run, step)), tf.constant(c1, dtype), tf.constant(c2, dtype),
                                 tf.constant(step + 1, dtype))
        if step == 0:
            first = {"loss": float(loss), "grads": {k: _numpy(g) for k, g in zip(params, grads, strict=True)}}
        if is_eval_step(pr, step):
            trace.append((step + 1, *evaluated()))
    train_ms = (time.perf_counter() - start) * 1e3
    acc, weights = trace[-1][1], trace[-1][2]
    return PredictionResult(
        accuracy=acc, usage=gate_usage(weights), eval_steps=np.array([s for s, _, _ in trace]),
        nnz_trace=np.stack([gate_usage(w)["nnz"] for _, _, w in trace]),
        accuracy_trace=np.stack([a for _, a, _ in trace]),
        first_loss=first["loss"], first_grads=first["grads"], final_loss=float(loss), train_ms=train_ms,
        final_params={key: _numpy(p) for key, p in params.items()})
