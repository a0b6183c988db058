"""``R`` recovery runs of one gate trained at once in TensorFlow (see ``batch``). Reads against
``train_batched_torch.py`` and ``train_tf.py``: the train step and the evaluation are ``tf.function``s traced once
per batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from gates import recipe
from gates import tf as G

from .batch import RowsOf, RunBatch, split_results
from .data import PlantedData
from .metrics import select
from .steps import TrainResult, is_eval_step
from .train_tf import _DTYPES, gate_weights, update_state

_ROWS = RowsOf(G)


def expert_outputs(x: tf.Tensor, params: dict[str, tf.Variable]) -> tf.Tensor:
    """Each run's learned experts on its own inputs, ``x (R, B, p) -> (R, B, n)``."""
    if "expert/a" in params:
        return tf.matmul(x, params["expert/a"])  # (R, p, n)
    hidden = tf.tanh(tf.einsum("rbp,reph->rbeh", x, params["expert/w"]))  # (R, B, n, h)
    return tf.einsum("rbeh,reh->rbe", hidden, params["expert/v"])


class _Model:
    """The ``R`` runs' variables, state and forward."""

    def __init__(self, batch: RunBatch, dtype: tf.DType) -> None:
        self.batch, self.dtype, pr = batch, dtype, batch.problem
        self.static, self.R = pr.gating == "static", batch.size
        self.params = {key: tf.Variable(v, dtype=dtype, name=key.replace("/", "_"))
                       for key, v in batch.initial_params().items()}
        self.gate_params = {key.split("/", 1)[1]: v for key, v in self.params.items() if key.startswith("gate/")}
        self.state = {key: tf.Variable(v, dtype=dtype, trainable=False) for key, v in batch.initial_state().items()}
        self.moments = {key: (tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v)))
                        for key, v in self.params.items()}
        hyper = {name: tf.constant(values, dtype) for name, values in batch.hyper.items()}
        self.hyper = {key: {name: tf.reshape(t, self.shape(p)) for name, t in hyper.items()}
                      for key, p in self.params.items()}

    def shape(self, p: tf.Variable) -> tuple[int, ...]:
        return (self.R,) + (1,) * (len(p.shape) - 1)

    def tensor(self, a: np.ndarray | None) -> tf.Tensor | None:
        return None if a is None else tf.constant(a, dtype=self.dtype)

    def views(self) -> dict[str, tf.Tensor]:
        """The gate parameters as the recipe takes them (see ``train_batched_torch``)."""
        if self.static:
            return {key: tf.reshape(v, (-1, *v.shape[2:])) for key, v in self.gate_params.items()}
        return {key: v[:, None] if len(v.shape) == 2 else v for key, v in self.gate_params.items()}

    def forward(self, inputs: dict[str, Any], training: bool, calls: Any = None) -> tuple[tf.Tensor, ...]:
        """Per-run squared error summed over tasks ``(R,)``, the runs' summed regulariser, and the flat weights."""
        x, u, cfg = inputs["x"], inputs["u"], self.batch.cfg
        f = inputs["f"] if inputs["f"] is not None else expert_outputs(x, self.params)  # (R, B, n)
        F = G if self.static else _ROWS
        q, reg = recipe.gate_forward(F, cfg, self.views(), None if self.static else x, training=training, noise=u,
                                     stacked=self.static, calls=calls, fuse_heads=False, state=self.state)
        qr = tf.reshape(q, (self.R, -1, cfg.num_experts))
        pred = tf.matmul(f, qr, transpose_b=True) if self.static else tf.reduce_sum(qr * f, -1, keepdims=True)
        mse = tf.reduce_sum(tf.reduce_mean((pred - inputs["y"]) ** 2, axis=1), axis=-1)
        return mse, reg * self.batch.reg_scale(), q

    def run_regs(self, inputs: dict[str, Any], calls: Any) -> np.ndarray:
        """Each run's own regulariser at this step (the recipe on its slice), for its ``final_loss``."""
        out, u = [], inputs["u"]
        u = None if u is None else tf.reshape(u, (self.R, -1, u.shape[-1]))
        for r in range(self.R):
            params = {key: v[r] for key, v in self.gate_params.items()}
            state = {key: tf.reshape(v, (self.R, -1, *v.shape[1:]))[r] for key, v in self.state.items()}
            x = None if self.static else inputs["x"][r]
            _, reg = gate_weights(self.batch.cfg, params, x, True, None if u is None else u[r], calls, state)
            out.append(float(reg))
        return np.asarray(out)


def _functions(model: _Model) -> tuple[Any, Any]:
    """The traced train step (forward, gradients, every run's Adam step, the state step) and evaluation."""
    pr = model.batch.problem

    @tf.function
    def train_step(inputs: dict[str, Any], c1: tf.Tensor, c2: tf.Tensor, calls: tf.Tensor):
        with tf.GradientTape() as tape:
            mse, reg, q_train = model.forward(inputs, training=True, calls=calls)
            loss = tf.reduce_sum(mse) + reg
        grads = tape.gradient(loss, list(model.params.values()))
        for (key, p), g in zip(model.params.items(), grads, strict=True):
            m, v = model.moments[key]
            h, shape = model.hyper[key], model.shape(p)
            m.assign(h["b1"] * m + h["1-b1"] * g)
            v.assign(h["b2"] * v + h["1-b2"] * g * g)
            p.assign_sub(h["lr"] * (m / tf.reshape(c1, shape)) / (tf.sqrt(v / tf.reshape(c2, shape)) + h["eps"]))
        update_state(model.batch.cfg, model.state, q_train, stacked=pr.gating == "static")
        return mse, grads

    @tf.function
    def evaluate(inputs: dict[str, Any]):
        mse, _, q = model.forward(inputs, training=False)
        return mse, q

    return train_step, evaluate


def train_batched(datas: Sequence[PlantedData], gate: str) -> list[TrainResult]:
    """Train ``gate`` on every run of ``datas`` at once; one ``TrainResult`` per run (see ``batch``)."""
    batch = RunBatch(datas, gate)
    pr, n = batch.problem, batch.cfg.num_experts
    model = _Model(batch, _DTYPES[pr.dtype])
    train_step, evaluate = _functions(model)
    test = {key: model.tensor(v) for key, v in batch.eval_inputs().items()}

    def selections() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mse, q = evaluate(test)
        weights = np.asarray(tf.reshape(q, (batch.size, -1, n)).numpy(), np.float64)
        return select(weights, gate, pr.k), np.asarray(mse.numpy(), np.float64), weights

    record: dict[str, Any] = {"eval_steps": [], "history": [], "first_grads": {}}
    record["initial_selection"] = selections()[0]
    start = time.perf_counter()
    for step in range(pr.steps):
        inputs = {key: model.tensor(v) for key, v in batch.step_inputs(step).items()}
        if step + 1 == pr.steps:  # each run's own regulariser, before this step's update
            regs = model.run_regs(inputs, tf.constant(step + 1, model.dtype))
        c1, c2 = batch.corrections(step)
        mse, grads = train_step(inputs, model.tensor(c1), model.tensor(c2), tf.constant(step + 1, model.dtype))
        if step == 0:
            record["first_grads"] = {key: np.asarray(g.numpy(), np.float64)
                                     for key, g in zip(model.params, grads, strict=True)}
        if step + 1 == pr.steps:
            record["final_loss"] = np.asarray(mse.numpy(), np.float64) + regs
        if is_eval_step(pr, step):
            record["eval_steps"].append(step + 1)
            record["history"].append(selections()[0])
    record["train_ms"] = (time.perf_counter() - start) * 1e3
    _, mse, weights = selections()
    learned = None if test["f"] is not None else np.asarray(expert_outputs(test["x"], model.params).numpy(), np.float64)
    record.update(history=np.stack(record["history"]), final_weights=weights, test_mse=mse / pr.tasks,
                  learned_f_test=learned, state={k: v.numpy().astype(np.float64) for k, v in model.state.items()},
                  final_params={key: np.asarray(p.numpy(), np.float64) for key, p in model.params.items()})
    return split_results(batch, record)
