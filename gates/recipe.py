"""The forward of a whole gate, written once for both frameworks.

``gate_forward(F, config, params, x, ...)`` turns a gate's configuration, its parameters (one mapping name ->
tensor, the names of ``GateConfig.param_shapes``) and its routing input into ``(weights, regulariser)``. ``F`` is
``gates.torch`` or ``gates.tf``: the recipe calls only the functional core whose names both share
(``softmax_weights``, ``topk_weights``, ``dselect_k_weights``, ``dselect_k_selectors``, ``hard_concrete_gates``,
``hard_concrete_weights``, ``hard_concrete_l0``, ``load_balance_cv2``, ``sigmoid_topk_weights``,
``sparsemax_weights``, ``entmax15_weights``, ``relu_weights``, ``router_z_loss``, ``switch_balance_loss``) and the few
tensor operations in ``F.OPS`` (an ``Ops``). The gate modules of both frameworks and both recovery training loops
call it; ``gates.reference`` keeps its own, independent float64 forward as the oracle they are tested against.

Performance is the modules': several heads on the same ``x`` are one matmul (``x @ [W_z | W_w]``, Top-k's
``x @ [W | W_noise]``), DSelect-k's selectors are built once for both of its regularisers, ``impl=`` picks the
DSelect-k implementation (in TensorFlow ``"auto"`` is the XLA-compiled factorized form).

Shapes: ``b`` batch, ``p`` routing-input width, ``n`` experts, ``k`` selectors, ``m`` code bits, ``T`` tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any, NamedTuple

from . import spec


class Ops(NamedTuple):
    """The tensor operations the recipe needs besides the functional core; each framework module has one, ``OPS``.

    ``read(param)``: a parameter as a tensor. ``heads(x, [(kernel, bias or None), ...])``: ``[x @ kernel + bias]``,
    one matmul of the kernels side by side when there are several. ``reshape(t, shape)``, ``softplus(t)``,
    ``sigmoid(t)``, ``row_sum(t)``: the sum over the last axis, kept.
    ``zero(like)``: a scalar 0 of ``like``'s dtype and device. ``normal(like)``: standard normal noise of
    ``like``'s shape; ``uniform(like)``: hard concrete's ``U(eps, 1 - eps)``. ``mean(t)``, ``sum(t)``: over all
    axes. ``entropy(r)``, ``unreachable(r)``: DSelect-k's two regularisers of built selectors ``r (..., k, n)``.
    """

    read: Callable[[Any], Any]
    sigmoid: Callable[[Any], Any]
    heads: Callable[[Any, Sequence[tuple[Any, Any]]], list[Any]]
    reshape: Callable[[Any, Sequence[int]], Any]
    softplus: Callable[[Any], Any]
    zero: Callable[[Any], Any]
    normal: Callable[[Any], Any]
    uniform: Callable[[Any], Any]
    mean: Callable[[Any], Any]
    sum: Callable[[Any], Any]
    row_sum: Callable[[Any], Any]
    entropy: Callable[[Any], Any]
    unreachable: Callable[[Any], Any]


class _Call(NamedTuple):
    F: ModuleType
    config: spec.GateConfig
    params: Mapping[str, Any]
    x: Any
    training: bool
    noise: Any
    stacked: bool
    fuse_heads: bool

    def heads(self, heads: list[tuple[Any, Any]]) -> list[Any]:
        """``[x @ kernel + bias]`` of several heads: one matmul (``fuse_heads``), else one per head."""
        if self.fuse_heads:
            return self.F.OPS.heads(self.x, heads)
        return [self.F.OPS.heads(self.x, [head])[0] for head in heads]

    def reduce(self, per_row: Any) -> Any:
        """A per-example regulariser ``(b,)`` to one number: its batch mean, or sum (``regularizer_reduction``).
        A stacked static regulariser ``(T,)`` is the sum over the ``T`` gates; a static one is already a number."""
        if self.stacked or self.config.hparams.get("regularizer_reduction") == "sum":
            return self.F.OPS.sum(per_row)
        return self.F.OPS.mean(per_row)


def gate_forward(
    F: ModuleType,
    config: spec.GateConfig,
    params: Mapping[str, Any],
    x: Any = None,
    *,
    training: bool = False,
    noise: Any = None,
    impl: str = "auto",
    check_noise: bool = True,
    stacked: bool = False,
    calls: Any = None,
    fuse_heads: bool = True,
    state: Mapping[str, Any] | None = None,
) -> tuple[Any, Any]:
    """``(weights, regulariser)`` of the gate ``config`` with ``params`` on ``x`` (``None`` for a static gate).

    Weights ``(b, n)`` per-example, ``(n,)`` static, ``(T, n)`` for ``stacked=True``: ``T`` static gates whose
    parameters have a leading task axis (the recovery loops' one gate per task), each gate's regulariser computed
    on its own and the ``T`` of them summed. The regulariser is 0 outside training. ``noise``: Top-k's standard
    normal ``eps`` (noisy gates) or hard concrete's uniform ``u`` in training, drawn by ``F`` when ``None``;
    ``check_noise`` checks a given ``u`` lies in (0, 1) (a read of its values). ``calls``: the 1-based count of
    training calls, read by a DSelect-k ``entropy_schedule``. ``fuse_heads=False`` computes several heads with one
    matmul each (the same numbers up to rounding; the recovery loops keep the arithmetic their recorded results were
    computed with). ``state``: the gate's non-trainable tensors by name (``GateConfig.state_shapes``: sigmoid_topk's
    ``expert_bias``, ReMoE's ``l1_coef``; stacked: with the task axis), required for those gates. Shapes are the
    caller's to check (``GateConfig.check_call``). An empty batch (``x`` of static shape ``(0, p)``) gives weights
    ``(0, n)`` and the regulariser 0 (a mean over no rows is defined as 0).
    """
    if stacked and x is not None:
        raise ValueError(f"stacked: expected a static gate (x=None) for stacked parameters; got x of shape {x.shape}")
    wanted = sorted(config.state_shapes())
    if sorted(state or {}) != wanted:
        raise ValueError(f"state: expected the keys {wanted} for gate {config.name!r}; got {sorted(state or {})}")
    call = _Call(F, config, params, x, bool(training), noise, stacked, fuse_heads)
    if config.name == "dselect_k":
        q, reg = _dselect_k(call, impl, calls)
    elif config.name == "hard_concrete":
        q, reg = _hard_concrete(call, check_noise)
    elif config.name in ("softmax", "topk"):
        q, reg = _softmax_or_topk(call)
    else:
        q, reg = _new_logit_gate(call, {key: F.OPS.read(v) for key, v in (state or {}).items()})
    if x is not None and x.shape[0] == 0:  # an empty batch (static size 0): weights (0, n), regulariser 0
        reg = F.OPS.zero(q)
    return q, reg


def entropy_weight(hparams: Mapping[str, Any], calls: Any) -> Any:
    """DSelect-k's entropy weight: ``entropy_reg``, or ``entropy_schedule(calls)`` when a schedule is set (as the
    reference layer's ``EntropyRegularizer(schedule_fn)`` reads its count of calls)."""
    schedule = hparams["entropy_schedule"]
    if schedule is None:
        return hparams["entropy_reg"]
    if calls is None:
        raise ValueError("calls: expected the 1-based count of training calls (the gate has an entropy_schedule); "
                         "got None")
    weight = schedule(calls)
    if isinstance(weight, (int, float)):
        spec.check_nonnegative("entropy_schedule(calls)", weight)
    return weight


def _dselect_k(call: _Call, impl: str, calls: Any) -> tuple[Any, Any]:
    F, cfg, p, ops = call.F, call.config, call.params, call.F.OPS
    h, n = cfg.hparams, cfg.num_experts
    if call.x is None:
        z, w = ops.read(p["z_logits"]), ops.read(p["w_logits"])  # (k, m), (k,); stacked (T, k, m), (T, k)
    else:
        z, w = call.heads([(p["z_kernel"], p["z_bias"]), (p["w_kernel"], p["w_bias"])])
        z = ops.reshape(z, (-1, cfg.k, cfg.num_bits))  # (b, k, m), w (b, k)
    q = F.dselect_k_weights(z, w, n, h["gamma"], impl=impl)
    reg = ops.zero(q)
    entropy = call.training and (h["entropy_schedule"] is not None or h["entropy_reg"] > 0)
    unreachable = call.training and not spec.is_power_of_two(n)
    if entropy or unreachable:
        r = F.dselect_k_selectors(z, n, h["gamma"])  # (..., k, n), built once for both regularisers
        if entropy:
            reg = reg + entropy_weight(h, calls) * call.reduce(ops.entropy(r))
        if unreachable:
            reg = reg + call.reduce(ops.unreachable(r))
    return q, reg


def _hard_concrete(call: _Call, check_noise: bool) -> tuple[Any, Any]:
    F, p, ops, h = call.F, call.params, call.F.OPS, call.config.hparams
    la = ops.read(p["log_alpha"]) if call.x is None else call.heads([(p["kernel"], p["bias"])])[0]
    u = None
    if call.training:
        u = call.noise if call.noise is not None else ops.uniform(la)
    check_u = call.noise is not None and check_noise
    q = F.hard_concrete_weights(F.hard_concrete_gates(la, u, h["beta"], h["limits"], check_u=check_u))
    reg = ops.zero(q)
    if call.training and h["l0_reg"] > 0:
        reg = reg + h["l0_reg"] * call.reduce(F.hard_concrete_l0(la, h["beta"], h["limits"]))
    return q, reg


def _softmax_or_topk(call: _Call) -> tuple[Any, Any]:
    F, cfg, p, ops, x = call.F, call.config, call.params, call.F.OPS, call.x
    h = cfg.hparams
    noisy = cfg.name == "topk" and call.training and h["noisy"]
    if x is None:
        logits = ops.read(p["logits"])  # (n,); stacked (T, n)
        noise_l = ops.read(p["noise_logits"]) if noisy else None
    elif noisy:
        logits, noise_l = call.heads([(p["kernel"], p["bias"]), (p["noise_kernel"], None)])  # (b, n) each
    else:
        logits = call.heads([(p["kernel"], p["bias"])])[0]  # (b, n)
    if cfg.name == "softmax":
        q = F.softmax_weights(logits)
        return q, _router_regularization(call, logits, q, ops.zero(q))
    clean = logits
    if noisy:
        eps = call.noise if call.noise is not None else ops.normal(logits)
        logits = logits + eps * ops.softplus(noise_l)
    q = F.topk_weights(logits, cfg.k)
    reg = ops.zero(q)
    if call.training and h["load_balance"] > 0:
        reg = reg + h["load_balance"] * _per_gate(call, F.load_balance_cv2, q)  # each task's gate its own
    return q, _router_regularization(call, clean, q, reg)


def _per_gate(call: _Call, fn: Callable[..., Any], *tensors: Any) -> Any:
    """``fn`` of one gate's tensors; for stacked static gates the sum over the ``T`` gates of ``fn`` of each."""
    if not call.stacked:
        return fn(*tensors)
    return sum(fn(*(t[i] for t in tensors)) for i in range(int(tensors[0].shape[0])))


def _router_probs(call: _Call, logits: Any, q: Any) -> Any:
    """The router probabilities ``P`` of the Switch loss: softmax of the logits (softmax, Top-k), the normalised
    sigmoid scores (sigmoid_topk, as Megatron-Core), the gate's own weights (sparsemax, entmax15, ReMoE)."""
    name, ops = call.config.name, call.F.OPS
    if name in ("softmax", "topk"):
        return call.F.softmax_weights(logits)
    if name == "sigmoid_topk":
        s = ops.sigmoid(logits)
        return s / ops.row_sum(s)
    return q


def _router_regularization(call: _Call, logits: Any, q: Any, reg: Any) -> Any:
    """``reg`` plus, in training, ``z_loss * mean(logsumexp(l)^2)`` and ``switch_balance * n sum_e f_e P_e``
    (logit gates; for stacked static gates each task's own, summed)."""
    h = call.config.hparams
    if not call.training:
        return reg
    if h["z_loss"] > 0:
        reg = reg + h["z_loss"] * _per_gate(call, call.F.router_z_loss, logits)
    if h["switch_balance"] > 0:
        probs = _router_probs(call, logits, q)
        loss = _per_gate(call, lambda p, w: call.F.switch_balance_loss(p, w, call.config.k), probs, q)
        reg = reg + h["switch_balance"] * loss
    return reg


def _new_logit_gate(call: _Call, state: Mapping[str, Any]) -> tuple[Any, Any]:
    """sigmoid_topk, sparsemax, entmax15 and ReMoE on their logits, with the router regularisers and ReMoE's L1 term
    (``l1_coef`` times the batch mean of ``sum_e q_e``, or ``l1_balanced``: the Switch form of ReMoE's code)."""
    F, cfg, p, ops, h = call.F, call.config, call.params, call.F.OPS, call.config.hparams
    logits = ops.read(p["logits"]) if call.x is None else call.heads([(p["kernel"], p["bias"])])[0]
    if cfg.name == "sigmoid_topk":
        q = F.sigmoid_topk_weights(logits, cfg.k, state["expert_bias"], h["normalize"])
    elif cfg.name == "sparsemax":
        q = F.sparsemax_weights(logits)
    elif cfg.name == "entmax15":
        q = F.entmax15_weights(logits)
    else:
        q = F.relu_weights(logits)
    reg = _router_regularization(call, logits, q, ops.zero(q))
    if call.training and cfg.name == "remoe":
        if h["l1_balanced"]:
            def l1(c: Any, w: Any) -> Any:
                return c * F.switch_balance_loss(w, w, cfg.k)
        else:
            def l1(c: Any, w: Any) -> Any:  # c times the batch mean of sum_e w_e
                return c * ops.mean(w) * cfg.num_experts
        reg = reg + _per_gate(call, l1, state["l1_coef"], q)
    return q, reg
