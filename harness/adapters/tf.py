"""TensorFlow adapter: devices, synchronisation, peak memory, NumPy in/out, and the workload of a timing case.
See ``harness.adapters`` for the contract.

* Synchronisation: ``tf.test.experimental.sync_devices()`` on a GPU. On the CPU, eager ops and ``tf.function``
  calls run synchronously (TF's async eager mode is off by default), so there is nothing to wait for, and
  ``sync_devices`` would add about 0.2 ms per call here: the CPU path does not call it.
* Timing events: TF has no public device events; GPU samples are host time around a synchronised call.
* Peak memory: on a GPU, ``tf.config.experimental.reset_memory_stats`` then ``get_memory_info(...)["peak"]``
  minus ``["current"]`` at the start. On the CPU, TF exposes no allocator statistics
  (``get_memory_info("CPU:0")`` raises "Allocator stats not available") and process RSS would count TF's own
  arenas and caches, not the gate: peak memory is recorded as None.
* Gradients: TF returns them from ``tape.gradient`` instead of accumulating, so there is nothing to reset.
* ``bwd`` (backward alone): the forward is recorded once on a persistent ``GradientTape``; each repetition is
  ``tape.gradient(loss, sources)`` on that tape. Caveat: this replays the recorded eager backward functions op by
  op (with their per-op dispatch cost); there is no compiled equivalent, so ``bwd`` with ``compiled`` is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

import gates
from harness import accuracy, cases
from harness.adapters import CaseBuild, Unavailable, Workload, make_workload

__all__ = [
    "devices", "check_device", "tf_device", "sync_fn", "event_factory", "flush_fn", "peak_memory",
    "to_tensor", "to_numpy", "reset_grads", "versions", "build_workload",
]

_DTYPES = {"float32": tf.float32, "float64": tf.float64, "bfloat16": tf.bfloat16}
L2_FLUSH_BYTES = 256 * 1024 * 1024


def devices() -> list[str]:
    return ["cpu"] + (["gpu"] if tf.config.list_physical_devices("GPU") else [])


def check_device(device: str) -> None:
    if cases.normalize_device(device) == "gpu" and not tf.config.list_physical_devices("GPU"):
        raise Unavailable("no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty)")


def tf_device(device: str) -> str:
    return "/GPU:0" if cases.normalize_device(device) == "gpu" else "/CPU:0"


def sync_fn(device: str) -> Callable[[], None] | None:
    """``tf.test.experimental.sync_devices`` on a GPU; None on the CPU (see the module docstring)."""
    return tf.test.experimental.sync_devices if cases.normalize_device(device) == "gpu" else None


def event_factory(device: str) -> None:
    """TensorFlow has no public device timing events: always the host clock."""
    return None


def flush_fn(device: str) -> Callable[[], None] | None:
    """Overwrite a 256 MiB GPU buffer (evicting L2); None on the CPU."""
    if cases.normalize_device(device) != "gpu":
        return None
    with tf.device("/GPU:0"):
        buffer = tf.Variable(tf.zeros([L2_FLUSH_BYTES // 4], tf.int32))
    zeros = tf.zeros_like(buffer)
    return lambda: buffer.assign(zeros)


def peak_memory(fn: Callable[[], Any], device: str) -> int | None:
    """Peak GPU bytes during ``fn()`` above the start (allocator statistics); None on the CPU (none exist)."""
    if cases.normalize_device(device) != "gpu":
        return None
    tf.test.experimental.sync_devices()
    tf.config.experimental.reset_memory_stats("GPU:0")
    base = tf.config.experimental.get_memory_info("GPU:0")["current"]
    fn()
    tf.test.experimental.sync_devices()
    return int(tf.config.experimental.get_memory_info("GPU:0")["peak"] - base)


def to_tensor(array: np.ndarray | None, device: str, dtype: str) -> tf.Tensor | None:
    if array is None:
        return None
    with tf.device(tf_device(device)):
        return tf.cast(tf.constant(np.asarray(array)), _DTYPES[dtype])


def to_numpy(tensor: Any) -> np.ndarray:
    return np.asarray(tf.cast(tensor, tf.float64).numpy())


def reset_grads(tensors: Sequence[Any]) -> None:
    """Nothing to do: ``tape.gradient`` returns gradients instead of accumulating them."""


def versions(device: str) -> dict[str, Any]:
    out: dict[str, Any] = {"framework": "tf", "tensorflow": tf.__version__}
    if cases.normalize_device(device) == "gpu":
        gpu = tf.config.list_physical_devices("GPU")[0]
        details = tf.config.experimental.get_device_details(gpu)
        out.update(gpu=details.get("device_name"), compute_capability=details.get("compute_capability"))
        build = tf.sysconfig.get_build_info()
        out.update(cuda=build.get("cuda_version"), cudnn=build.get("cudnn_version"))
    return out


# --------------------------------------------------------------------------------------------------------------
# Workloads: the TensorFlow calls of a case; harness.adapters.make_workload does the rest.
# --------------------------------------------------------------------------------------------------------------
def _grads64(case: cases.Case, gate_params: Mapping[str, np.ndarray], x: np.ndarray | None,
             noise: np.ndarray | None, c: np.ndarray) -> dict[str, np.ndarray]:
    """Gradients of ``sum(q * c) + regularization`` by float64 autograd (training mode), w.r.t. params and x."""
    G = gates.backend("tf")
    impl = "bitwise" if case.gate == "dselect_k" else "auto"
    with tf.device(tf_device(case.device)):
        g64 = G.make_gate(case.gate, case.experts, case.k, case.input_dim, dtype="float64", impl=impl,
                          **dict(case.hparams))
        g64.set_numpy_params(dict(gate_params))
        x64 = None if x is None else tf.constant(x)
        n64 = None if noise is None else tf.constant(noise)
        with tf.GradientTape() as tape:
            if x64 is not None:
                tape.watch(x64)
            q64 = g64(x64, training=True, noise=n64) if x64 is not None else g64(training=True, noise=n64)
            loss = tf.reduce_sum(q64 * tf.constant(c)) + g64.regularization_loss
        names = list(g64.get_numpy_params())
        sources = [g64.param(name) for name in names] + ([x64] if x64 is not None else [])
        grads = tape.gradient(loss, sources)
    return {name: (to_numpy(g) if g is not None else np.zeros(tuple(v.shape)))
            for name, g, v in zip(names + (["x"] if x64 is not None else []), grads, sources, strict=True)}


def _gate_calls(gate: Any, variables: list[Any]) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """``forward(x)`` (eval), ``record(x, c, noise, persistent) -> (tape, loss, q)`` (training forward on a tape)
    and ``grads_fn(x, c, noise) -> (gradients of variables and x, q)`` of a gate (x None: a static gate)."""

    def forward(x_):
        return gate(x_, training=False) if x_ is not None else gate(training=False)

    def record(x_, c_, noise_, persistent=False):
        with tf.GradientTape(persistent=persistent) as tape:
            if x_ is not None:
                tape.watch(x_)
            q = (gate(x_, training=True, noise=noise_, check_noise=False) if x_ is not None
                 else gate(training=True, noise=noise_, check_noise=False))
            loss = tf.reduce_sum(q * c_) + gate.regularization_loss
        return tape, loss, q

    def grads_fn(x_, c_, noise_):
        tape, loss, q = record(x_, c_, noise_)
        sources = variables + ([x_] if x_ is not None else [])
        return tape.gradient(loss, sources), q

    return forward, record, grads_fn


class _TfCase(CaseBuild):
    """A case's gate (seeded, on its device, in its dtype and impl), its tensors and its TensorFlow calls.

    ``compiled``: ``tf.function(jit_compile=True)`` (XLA) of the forward and of tape + gradient. Timed calls run
    under the case's ``tf.device`` on a GPU; gradients come back from ``tape.gradient``, so there is no ``reset``.
    """

    def __init__(self, case: cases.Case):
        self.case, self.place = case, tf_device(case.device)
        inputs = cases.make_inputs(case)
        with tf.device(self.place):
            self.gate = gates.backend("tf").make_gate(
                case.gate, case.experts, case.k, case.input_dim, dtype=case.dtype, seed=cases.SEED_PARAMS,
                impl=cases.make_gate_impl(case), **dict(case.hparams))
        self.x = to_tensor(inputs.x, case.device, case.dtype)
        self.c = to_tensor(inputs.c, case.device, case.dtype)
        self.noise = to_tensor(inputs.noise, case.device, case.dtype) if case.training else None
        self.c_check = to_tensor(accuracy.check_c(case, inputs), case.device, case.dtype)
        variables = [self.gate.param(name) for name in self.gate.get_numpy_params()]
        self.sources = variables + ([self.x] if self.x is not None else [])
        self.names = list(self.gate.get_numpy_params()) + (["x"] if self.x is not None else [])
        self.forward, self.record, self.grads_fn = _gate_calls(self.gate, variables)
        if case.impl == "compiled":
            self.forward = tf.function(self.forward, jit_compile=True)
            self.grads_fn = tf.function(self.grads_fn, jit_compile=True)

    def _placed(self, f: Callable[[], Any]) -> Callable[[], Any]:
        if self.case.device == "cpu":
            return f
        place = self.place

        def run() -> Any:
            with tf.device(place):
                return f()
        return run

    numpy = staticmethod(to_numpy)

    def eval_call(self) -> Callable[[], Any]:
        forward, x = self.forward, self.x
        return self._placed(lambda: forward(x))

    def train_call(self) -> Callable[[], Any]:
        grads_fn, x, c, noise = self.grads_fn, self.x, self.c, self.noise
        return self._placed(lambda: grads_fn(x, c, noise)[0])

    def backward_call(self) -> Callable[[], Any]:
        """The training forward recorded once on a persistent tape; each call is ``tape.gradient`` on it."""
        with tf.device(self.place):
            tape, loss, _ = self.record(self.x, self.c, self.noise, persistent=True)
        sources = self.sources
        return self._placed(lambda: tape.gradient(loss, sources))

    def eval_weights(self) -> np.ndarray:
        return to_numpy(self.forward(self.x))

    def train_weights_and_grads(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        g, q = self.grads_fn(self.x, self.c_check, self.noise)
        grads = {name: (to_numpy(t) if t is not None else np.zeros(v.shape))
                 for name, t, v in zip(self.names, g, self.sources, strict=True)}
        return to_numpy(q), grads

    def grads64(self, gate_params: Mapping[str, np.ndarray], x: np.ndarray | None, noise: np.ndarray | None,
                c: np.ndarray) -> dict[str, np.ndarray]:
        return _grads64(self.case, gate_params, x, noise, c)


def build_workload(case: cases.Case, settings: Mapping[str, Any] | None = None) -> Workload:
    """Build the gate of ``case`` (seeded) on its device, its inputs and the timed call of its mode and impl.

    ``fwd``: ``gate(x, training=False)``. ``fwdbwd``: a ``GradientTape`` around the training forward, ``loss =
    sum(q*c) + regularization_loss``, ``tape.gradient`` w.r.t. the weights and ``x``. ``bwd``: see the module
    docstring. ``compiled``: ``tf.function(jit_compile=True)`` (XLA) around the same Python function;
    ``compile_ms`` is the first call (trace and compile).
    """
    check_device(case.device)
    if case.impl == "compiled" and case.mode == "bwd":
        raise Unavailable("TensorFlow: backward alone cannot be separated from its forward under "
                          "tf.function(jit_compile=True); time mode 'fwdbwd' instead")
    return make_workload(case, _TfCase(case), settings)
