"""Relative comparisons between two runs: each case against its group's reference gate, timed in the same rounds.

Two runs of unchanged code on a shared VM differ by up to 2.5x in absolute time (the host's state over seconds to
minutes, and the process itself: docs/performance.md), and no interval made inside one run covers that. Within a
run, though, the cases of a group (``GROUP_KEYS``: same framework, device, mode, gating, shape, dtype) are timed
in the same interleaved rounds of the same process, so whatever slows the machine or the process slows all of
them alike, and a case's time over its group's **reference** (Top-k by default) in the same round cancels it.
Measured, back-to-back runs of unchanged code then passed where absolute times failed (docs/performance.md).

``gatebench compare`` (``reports.compare``) therefore judges, by default, each case by how its per-round ratio to
the reference moved: ``ratio = median(NEW's per-round ratios) / median(OLD's per-round ratios)``, with a
percentile bootstrap interval that resamples each side's rounds (``relative_estimate``). A change that slows one
gate 1.5x moves that gate's ratio 1.5x; a slow machine moves nothing.

The reference cases themselves have nothing to be relative to. One is judged slower when **every** other case of
its group (two or more, judged) reads faster against it beyond the factor: the reference is what changed
(``reference_consensus``). A change that slows every gate of a group alike, the reference included (a framework
upgrade, a slower harness), is invisible to relative comparisons: ``--absolute`` judges absolute times, which on
a shared VM only catch changes well beyond its noise (docs/performance.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from harness.rounds import round_ratios

from .comparison import MIN_UNITS, Estimate, Sample, baseline_impl, finite, round_medians
from .stats import DEFAULT_BOOTSTRAP

__all__ = ["DEFAULT_REFERENCE", "GROUP_KEYS", "ReferenceIndex", "relative_ratios", "relative_estimate",
           "reference_consensus", "method_relative"]

DEFAULT_REFERENCE = "topk"
# harness.tasks.GROUP_KEYS: the columns of the cases timed together in interleaved rounds (a test keeps them equal).
GROUP_KEYS: tuple[str, ...] = ("framework", "device", "mode", "gating", "batch", "input_dim", "experts", "k",
                               "dtype")


def method_relative(reference: str, few: bool = False) -> str:
    return (f"relative to {reference}: ratio only, too few rounds" if few
            else f"relative to {reference}: bootstrap over rounds")


def group_of(row: Mapping[str, Any]) -> tuple:
    """The group a row was timed in (its ``GROUP_KEYS`` values, ``None`` for missing and NaN)."""
    out = []
    for key in GROUP_KEYS:
        value = row.get(key)
        if isinstance(value, float) and math.isnan(value):
            value = None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        out.append(value)
    return tuple(out)


class ReferenceIndex:
    """The reference gate's rows of one side, by group and implementation; ``of(row)`` is a row's reference
    (the same implementation when the reference has it, else ``eager``: ``reports.comparison.baseline_impl``)."""

    def __init__(self, rows: Iterable[Mapping[str, Any]], reference: str):
        self.reference = reference
        self.rows: dict[tuple, dict[Any, Mapping[str, Any]]] = {}
        for row in rows:
            if row.get("gate") == reference:
                self.rows.setdefault(group_of(row), {})[row.get("impl")] = row

    def of(self, row: Mapping[str, Any]) -> Mapping[str, Any] | None:
        if row.get("gate") == self.reference:
            return None
        by_impl = self.rows.get(group_of(row), {})
        impl = baseline_impl(row.get("impl"), set(by_impl))
        return by_impl.get(impl)


def relative_ratios(row: Mapping[str, Any] | None, ref: Mapping[str, Any] | None) -> np.ndarray | None:
    """A case's per-round ratios to its reference (the rounds both were timed in, in round order), or None when
    either has no usable samples with round indices (or they share no round)."""
    if row is None or ref is None or row.get("status") != "ok" or ref.get("status") != "ok":
        return None
    got = []
    for side in (row, ref):
        samples, rounds = side.get("samples_ms"), side.get("sample_rounds")
        if not isinstance(samples, (list, tuple, np.ndarray)) or not isinstance(rounds, (list, tuple, np.ndarray)) \
                or len(samples) != len(rounds) or not len(samples):
            return None
        values = [finite(v) for v in samples]
        if any(v is None or v <= 0 for v in values):
            return None
        got.append((values, list(rounds)))
    ratios = round_ratios(got[0][0], got[0][1], got[1][0], got[1][1])
    return np.asarray([ratios[k] for k in sorted(ratios)], dtype=float) if ratios else None


def relative_estimate(new: np.ndarray, old: np.ndarray, reference: str, *, level: float = 0.95,
                      n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> Estimate:
    """``median(new) / median(old)`` of two sides' per-round ratios, with a percentile bootstrap interval over
    each side's rounds; with fewer than ``MIN_UNITS`` rounds a side, the ratio alone (no interval). The
    statistic is ``reports.comparison.round_medians`` with each per-round ratio as one unit."""
    got = round_medians(Sample(new), Sample(old), level=level, n_boot=n_boot, seed=seed)
    units = int(min(new.size, old.size))
    return Estimate(got.ratio, got.ci_low, got.ci_high, method_relative(reference, few=units < MIN_UNITS), units)


def reference_consensus(marks: Sequence[str], ratios: Sequence[float], faster: str) -> float | None:
    """When two or more cases of a group were judged against their reference and every one reads ``faster``,
    how much slower the reference got: the median of the inverted ratios; else None."""
    if len(marks) < 2 or any(mark != faster for mark in marks):
        return None
    return float(np.median([1.0 / r for r in ratios]))
