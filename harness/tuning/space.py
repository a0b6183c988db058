"""Search spaces: which knobs of ``RecoveryProblem`` a study tunes for each gate, and over which range.

Every gate tunes the learning rate ``lr`` (log-uniform). On top of it a gate declares its own hyper-parameters:
DSelect-k its smooth-step width ``gamma``, entropy weight ``entropy_reg`` and selector initialisation
``dselect_z_init``; hard concrete its L0 weight ``l0_reg``; Top-k its training noise and load balancing. A gate
with no declaration (softmax; any gate added later) tunes ``lr`` only, until ``declare`` gives it more.

A declared parameter is a knob of ``RecoveryProblem``: a trial is the base problem with these knobs replaced, so its
rows carry the values as columns like any recovery row. A declared knob that ``RecoveryProblem`` does not have (yet)
is left out of the space and listed in ``SearchSpace.unavailable``, so that a study says what it could not tune.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Param", "SearchSpace", "COMMON", "DECLARED", "declare", "search_space", "problem_knobs"]


@dataclass(frozen=True)
class Param:
    """One tuned knob: a float range (``low``..``high``, log-uniform when ``log``) or a list of ``choices``."""

    knob: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.choices is not None:
            if not self.choices:
                raise ValueError(f"{self.knob}: expected at least one choice; got {self.choices!r}")
            return
        if not (isinstance(self.low, (int, float)) and isinstance(self.high, (int, float)) and self.low < self.high):
            raise ValueError(f"{self.knob}: expected a range low < high; got {self.low!r}..{self.high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"{self.knob}: expected low > 0 for a log-uniform range; got {self.low!r}")

    def distribution(self) -> Any:
        """The Optuna distribution of this knob (Optuna is imported here)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        if self.choices is not None:
            return CategoricalDistribution(list(self.choices))
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return any(value == choice and type(value) is type(choice) for choice in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        return self.low <= value <= self.high

    def describe(self) -> str:
        if self.choices is not None:
            return f"{self.knob} in {{{', '.join(map(str, self.choices))}}}"
        return f"{self.knob} {'log-uniform' if self.log else 'uniform'} [{self.low:g}, {self.high:g}]"


# Every gate: the learning rate (the problem's default is 0.05).
COMMON: tuple[Param, ...] = (Param("lr", 1e-3, 0.3, log=True),)
# Each gate's own knobs (the problem's defaults: gamma 1, entropy_reg 0.001, dselect_z_init 0.01, l0_reg 0.01).
DECLARED: dict[str, tuple[Param, ...]] = {
    "dselect_k": (
        Param("gamma", 0.25, 4.0, log=True),
        Param("entropy_reg", 1e-5, 0.1, log=True),
        Param("dselect_z_init", 0.005, 1.0, log=True),
    ),
    "hard_concrete": (Param("l0_reg", 1e-4, 0.1, log=True),),
    # Noisy Top-k (Shazeer et al.) and its CV^2 load-balancing weight; 0 is "no load balancing".
    "topk": (Param("topk_noisy", choices=(False, True)), Param("load_balance", 0.0, 0.1)),
}


def declare(gate: str, *params: Param) -> None:
    """Declare (or replace) the knobs that ``gate`` tunes besides ``lr``."""
    if not isinstance(gate, str) or not gate:
        raise ValueError(f"gate: expected a gate name; got {gate!r}")
    for param in params:
        if not isinstance(param, Param):
            raise ValueError(f"params: expected Param values; got {param!r}")
    DECLARED[gate] = tuple(params)


def problem_knobs() -> frozenset[str]:
    """The fields of ``RecoveryProblem``: what a trial can change."""
    from harness.recovery.problem import RecoveryProblem

    return frozenset(field.name for field in dataclasses.fields(RecoveryProblem))


@dataclass(frozen=True)
class SearchSpace:
    """What a study tunes for one gate: ``params`` (common first, then the gate's), and ``unavailable``: declared
    knobs that the problem does not have, left out."""

    gate: str
    params: tuple[Param, ...]
    unavailable: tuple[str, ...] = ()

    @property
    def knobs(self) -> tuple[str, ...]:
        return tuple(param.knob for param in self.params)

    def distributions(self) -> dict[str, Any]:
        return {param.knob: param.distribution() for param in self.params}

    def check(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` restricted to this space, each inside its range (``ValueError`` naming the knob if not)."""
        missing = [knob for knob in self.knobs if knob not in values]
        if missing:
            raise ValueError(f"params: expected values for {', '.join(missing)} ({self.gate}); got {dict(values)!r}")
        for param in self.params:
            if not param.contains(values[param.knob]):
                raise ValueError(f"{param.knob}: expected {param.describe()}; got {values[param.knob]!r}")
        return {knob: values[knob] for knob in self.knobs}

    def describe(self) -> str:
        text = "; ".join(param.describe() for param in self.params)
        if self.unavailable:
            text += f" (not tunable here: {', '.join(self.unavailable)} are not RecoveryProblem knobs)"
        return text


def search_space(gate: str, knobs: frozenset[str] | None = None) -> SearchSpace:
    """The space of ``gate``: ``COMMON`` and the gate's declared knobs that are among ``knobs`` (default: the
    fields of ``RecoveryProblem``)."""
    if not isinstance(gate, str) or not gate:
        raise ValueError(f"gate: expected a gate name; got {gate!r}")
    knobs = problem_knobs() if knobs is None else knobs
    declared = COMMON + DECLARED.get(gate, ())
    kept = tuple(param for param in declared if param.knob in knobs)
    unavailable = tuple(param.knob for param in declared if param.knob not in knobs)
    return SearchSpace(gate, kept, unavailable)
