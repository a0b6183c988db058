"""Planted-expert data in seeded NumPy: the same arrays feed the PyTorch and the TensorFlow run of a seed.

Shapes: ``N`` training examples, ``M`` test examples, ``p`` input width, ``n`` experts, ``h`` hidden units of an
MLP expert, ``T`` tasks, ``C`` clusters, ``S`` rows of the planted support (``T`` static, ``C`` per-example),
``B`` batch, ``k`` planted non-zeros.

The generators reconstruct the DSelect-k paper's synthetic setting from its description (they are not the paper's
own code or data). Each seed draws independent streams (``default_rng([seed, stream])``) for the data, the
mini-batch order, the gates' training noise and the initial parameters, so changing one (say, the gate) never
shifts another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .problem import RecoveryProblem

# Stream numbers of the per-seed generators (append only: changing one changes every recorded result).
_DATA, _BATCHES, _NOISE, _GATE_INIT, _EXPERT_INIT = 0, 1, 2, 3, 4


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream])


def expert_outputs(x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """``x (N, p) -> (N, n)``. Linear experts ``{"a": (p, n)}``: ``x @ a``. MLP experts ``{"w": (n, p, h),
    "v": (n, h)}``: ``f_e(x) = v_e . tanh(x W_e)``."""
    if "a" in params:
        return x @ params["a"]
    hidden = np.tanh(np.einsum("bp,eph->beh", x, params["w"]))  # (N, n, h)
    return np.einsum("beh,eh->be", hidden, params["v"])


def init_expert_params(problem: RecoveryProblem, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random experts with pairwise parameter correlation ``rho``: ``sqrt(rho) * shared + sqrt(1 - rho) * own``.

    Linear: ``a (p, n) ~ N(0, 1/p)``. MLP: ``w (n, p, h) ~ N(0, 1/p)``, ``v (n, h) ~ N(0, 1/h)``.
    """
    n, p, h, rho = problem.experts, problem.input_dim, problem.hidden, problem.expert_correlation

    def correlated(shape_one: tuple[int, ...], axis: int, scale: float) -> np.ndarray:
        shared = np.expand_dims(rng.normal(0.0, scale, size=shape_one), axis)
        own_shape = list(shape_one)
        own_shape.insert(axis, n)
        own = rng.normal(0.0, scale, size=own_shape)
        return np.sqrt(rho) * shared + np.sqrt(1.0 - rho) * own

    if problem.expert_kind == "linear":
        return {"a": correlated((p,), 1, 1.0 / np.sqrt(p))}
    return {"w": correlated((p, h), 0, 1.0 / np.sqrt(p)), "v": rng.normal(0.0, 1.0 / np.sqrt(h), size=(n, h))}


@dataclass
class PlantedData:
    """One seed's problem instance. ``support (S, n)`` bool and ``coef (S, n)`` (positive on the support, rows
    summing to 1, zero elsewhere) define the targets ``y = f(x) @ coef[row].T + noise * N(0, 1)``, where the row is
    the task (static) or the example's input cluster (per-example). ``y_train (N, T)``, ``y_test (M, T)``.
    ``f_train (N, n)``, ``f_test (M, n)``: the planted experts' outputs (unit variance on the training inputs).
    ``batches (steps, B)``: the example indices of every training step."""

    problem: RecoveryProblem
    seed: int
    x_train: np.ndarray
    x_test: np.ndarray
    expert_params: dict[str, np.ndarray]
    f_train: np.ndarray
    f_test: np.ndarray
    support: np.ndarray
    coef: np.ndarray
    task_cluster: np.ndarray  # (T,) static: the cluster of each task; per-example: zeros (one task)
    cluster_train: np.ndarray  # (N,) per-example: each example's input cluster; static: zeros
    cluster_test: np.ndarray  # (M,)
    y_train: np.ndarray
    y_test: np.ndarray
    batches: np.ndarray
    _noise_cache: dict[str, np.ndarray | None] = field(default_factory=dict, repr=False)

    @property
    def test_support(self) -> np.ndarray:
        """The planted support that each row of the test-time selection is scored against: ``(T, n)`` static,
        ``(M, n)`` per-example (each test example's cluster support)."""
        if self.problem.gating == "static":
            return self.support
        return self.support[self.cluster_test]

    def gate_noise(self, gate: str) -> np.ndarray | None:
        """Training noise of ``gate`` for every step, ``(steps, T, n)`` static or ``(steps, B, n)`` per-example:
        hard concrete's uniform ``u`` in ``(eps, 1 - eps)``, noisy Top-k's (``topk_noisy``) standard normal
        ``eps``; ``None`` for the noise-free gates. Drawn from the seed's noise stream (one gate per run)."""
        if gate not in self._noise_cache:
            pr = self.problem
            size = (pr.steps, pr.tasks if pr.gating == "static" else pr.batch, pr.experts)
            if gate == "hard_concrete":
                from gates.spec import HARD_CONCRETE_EPS as eps

                self._noise_cache[gate] = _rng(self.seed, _NOISE).uniform(eps, 1.0 - eps, size=size)
            elif gate == "topk" and pr.topk_noisy:
                self._noise_cache[gate] = _rng(self.seed, _NOISE).standard_normal(size=size)
            else:
                self._noise_cache[gate] = None
        return self._noise_cache[gate]

    def init_gate_params(self, gate: str) -> dict[str, np.ndarray]:
        """Initial gate parameters (float64), from the gates' own ``init_params``. Static: one gate per task,
        stacked along a leading task axis (``logits (T, n)``, ``z_logits (T, k, m)``...). Per-example: the one
        routing gate's parameters."""
        cfg = self.problem.gate_config(gate)
        rng = _rng(self.seed, _GATE_INIT)
        # gates' init draws z ~ U(-gamma/100, gamma/100); rescale to U(-c gamma, c gamma), c = dselect_z_init.
        z_scale = self.problem.dselect_z_init / 0.01
        if self.problem.gating == "per_example":
            per_gate = [cfg.init_params(rng)]
        else:
            per_gate = [cfg.init_params(rng) for _ in range(self.problem.tasks)]
        for params in per_gate:
            for key in ("z_logits", "z_kernel", "z_bias"):
                if key in params:
                    params[key] = params[key] * z_scale
        if self.problem.gating == "per_example":
            return per_gate[0]
        return {key: np.stack([p[key] for p in per_gate]) for key in per_gate[0]}

    def init_learned_experts(self) -> dict[str, np.ndarray]:
        """Initial parameters of the trainable experts (``experts_mode="learned"``): fresh random experts."""
        return init_expert_params(self.problem, _rng(self.seed, _EXPERT_INIT))


def generate(problem: RecoveryProblem, seed: int) -> PlantedData:
    """Draw the instance of ``problem`` for ``seed`` (see ``PlantedData``)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0; got {seed!r}")
    seed = int(seed)
    pr = problem
    rng = _rng(seed, _DATA)
    n, k, p, C, T = pr.experts, pr.k, pr.input_dim, pr.clusters, pr.tasks
    N, M = pr.samples, pr.test_samples

    # Inputs: static: x ~ N(0, I). Per-example: cluster c has mean mu_c ~ N(0, sep^2 / p I), x = mu_c + N(0, I).
    if pr.gating == "per_example":
        means = rng.normal(0.0, pr.cluster_separation / np.sqrt(p), size=(C, p))
        cluster_train = rng.integers(0, C, size=N)
        cluster_test = rng.integers(0, C, size=M)
        x_train = means[cluster_train] + rng.normal(size=(N, p))
        x_test = means[cluster_test] + rng.normal(size=(M, p))
    else:
        cluster_train, cluster_test = np.zeros(N, dtype=np.int64), np.zeros(M, dtype=np.int64)
        x_train, x_test = rng.normal(size=(N, p)), rng.normal(size=(M, p))

    # Planted experts, scaled to unit output standard deviation on the training inputs.
    expert_params = init_expert_params(pr, rng)
    scale = expert_outputs(x_train, expert_params).std(axis=0)  # (n,)
    if "a" in expert_params:
        expert_params["a"] = expert_params["a"] / scale[None, :]
    else:
        expert_params["v"] = expert_params["v"] / scale[:, None]
    f_train, f_test = expert_outputs(x_train, expert_params), expert_outputs(x_test, expert_params)

    # Planted supports: one random k-subset per cluster; rows are tasks (static, task t in cluster t mod C) or
    # clusters (per-example). Coefficients proportional to 1 + U(0, 1) on the support, summing to 1.
    cluster_support = np.zeros((C, n), dtype=bool)
    for c in range(C):
        cluster_support[c, rng.choice(n, size=k, replace=False)] = True
    task_cluster = np.arange(T) % C if pr.gating == "static" else np.zeros(1, dtype=np.int64)
    support = cluster_support[task_cluster] if pr.gating == "static" else cluster_support
    raw = np.where(support, 1.0 + rng.uniform(size=support.shape), 0.0)
    coef = raw / raw.sum(axis=1, keepdims=True)

    if pr.gating == "static":
        clean_train, clean_test = f_train @ coef.T, f_test @ coef.T  # (N, T), (M, T)
    else:
        clean_train = np.einsum("be,be->b", f_train, coef[cluster_train])[:, None]  # (N, 1)
        clean_test = np.einsum("be,be->b", f_test, coef[cluster_test])[:, None]
    y_train = clean_train + pr.noise * rng.normal(size=clean_train.shape)
    y_test = clean_test + pr.noise * rng.normal(size=clean_test.shape)

    batch_rng = _rng(seed, _BATCHES)
    batches = np.stack([batch_rng.choice(N, size=pr.batch, replace=False) for _ in range(pr.steps)])
    return PlantedData(
        problem=pr, seed=seed, x_train=x_train, x_test=x_test, expert_params=expert_params, f_train=f_train,
        f_test=f_test, support=support, coef=coef, task_cluster=task_cluster, cluster_train=cluster_train,
        cluster_test=cluster_test, y_train=y_train, y_test=y_test, batches=batches,
    )
