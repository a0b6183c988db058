"""The validation split of a tuning trial, and the data a trial trains on: no test split, no planted support.

``harness.recovery.data.generate`` draws a training and a test split of one planted instance. A trial must not
look at either the test examples or the support, so ``trial_data`` replaces the test split by a validation split
of the same distribution (same planted experts, coefficients and, per-example, cluster means) drawn from its own
stream ``default_rng([seed, VALIDATION_STREAM])``, independent of the streams of the data (0), batches (1), noise (2)
and initial parameters (3, 4), and blanks the support and the coefficients. The training loops evaluate on the
"test" fields of the data they are given, so the ``test_mse`` of a trial's run is its validation MSE.

Per-example gating: the cluster means are not kept in ``PlantedData``; they are the first draw of the data
stream (``generate`` draws them first), redrawn here (``cluster_means``; a test checks that they reproduce the
training inputs).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from harness.recovery.data import PlantedData, expert_outputs

__all__ = ["VALIDATION_STREAM", "DATA_STREAM", "cluster_means", "validation_split", "trial_data"]

# Stream of the validation split (far from the data module's streams 0-4, which are append-only).
VALIDATION_STREAM = 1000
# The data module's stream of inputs, experts and supports (its first draw: the per-example cluster means).
DATA_STREAM = 0


def cluster_means(data: PlantedData) -> np.ndarray:
    """Per-example gating: the ``(C, p)`` cluster means of ``data``'s inputs (the data stream's first draw)."""
    pr = data.problem
    rng = np.random.default_rng([data.seed, DATA_STREAM])
    return rng.normal(0.0, pr.cluster_separation / np.sqrt(pr.input_dim), size=(pr.clusters, pr.input_dim))


def validation_split(data: PlantedData, size: int | None = None) -> dict[str, np.ndarray]:
    """``size`` (default: the problem's ``test_samples``) fresh examples of ``data``'s distribution: ``x (V, p)``,
    ``f (V, n)`` (the planted experts' outputs), ``y (V, T)`` noisy targets and ``cluster (V,)``."""
    pr = data.problem
    size = pr.test_samples if size is None else size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size: expected an integer >= 1; got {size!r}")
    rng = np.random.default_rng([data.seed, VALIDATION_STREAM])
    if pr.gating == "per_example":
        cluster = rng.integers(0, pr.clusters, size=size)
        x = cluster_means(data)[cluster] + rng.normal(size=(size, pr.input_dim))
    else:
        cluster = np.zeros(size, dtype=np.int64)
        x = rng.normal(size=(size, pr.input_dim))
    f = expert_outputs(x, data.expert_params)
    if pr.gating == "static":
        clean = f @ data.coef.T  # (V, T)
    else:
        clean = np.einsum("be,be->b", f, data.coef[cluster])[:, None]  # (V, 1)
    y = clean + pr.noise * rng.normal(size=clean.shape)
    return {"x": x, "f": f, "y": y, "cluster": cluster}


def trial_data(data: PlantedData) -> PlantedData:
    """``data`` as a trial sees it: the test split replaced by the validation split, the planted support and
    coefficients blanked (all False / zero). The training split, batches, noise and initial parameters are
    ``data``'s own, so a trial trains exactly as a recovery run of that seed does."""
    val = validation_split(data)
    return dataclasses.replace(
        data, x_test=val["x"], f_test=val["f"], y_test=val["y"], cluster_test=val["cluster"],
        support=np.zeros_like(data.support), coef=np.zeros_like(data.coef), _noise_cache={},
    )
