"""Tuning suite files (``kind = "tuning"``): one study in TOML, read by ``load_tuning_suite`` into a
``TuningConfig`` (``gatebench tune --suite FILE``)::

    name = "tuning_default"
    kind = "tuning"
    description = "..."
    gates = ["softmax", "topk", "dselect_k", "hard_concrete"]   # default: every gate recovery can score
    framework = "torch"
    trials = 20                 # per gate, the same for all
    tune_seeds = 3              # an integer S (seeds 0..S-1) or a list
    heldout_seeds = 10          # an integer R (seeds 1000..1000+R-1) or a list; disjoint from tune_seeds
    sampler = "tpe"             # or "random"
    seed = 0
    baseline = "topk"
    max_nnz = 4.5               # optional: trials whose gate keeps more experts on average count as failed
    [problem]                   # RecoveryProblem knobs (defaults for the rest); name: the problem column
    name = "static16"
    experts = 16
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.recovery.problem import RecoveryProblem

from .study import HELDOUT_START, TuningConfig

__all__ = ["SUITE_KEYS", "tuning_config", "load_tuning_suite"]

SUITE_KEYS: tuple[str, ...] = ("name", "kind", "description", "gates", "framework", "trials", "tune_seeds",
                               "heldout_seeds", "sampler", "seed", "baseline", "max_nnz", "problem")

_OPTIONS: tuple[str, ...] = ("framework", "trials", "sampler", "seed", "baseline", "max_nnz")


def _seed_list(key: str, value: Any, start: int) -> Any:
    """An integer count becomes ``start..start+count-1``; a list is kept (``TuningConfig`` checks both)."""
    if isinstance(value, bool):
        raise ValueError(f"{key}: expected an integer >= 1 or a list of seeds; got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"{key}: expected an integer >= 1 or a list of seeds; got {value!r}")
        return tuple(range(start, start + value))
    if not isinstance(value, list):
        raise ValueError(f"{key}: expected an integer >= 1 or a list of seeds; got {value!r}")
    return tuple(value)


def tuning_config(raw: Mapping[str, Any], source: str = "suite") -> TuningConfig:
    """Check a parsed tuning suite and build its ``TuningConfig`` (``ValueError`` naming the key)."""
    unknown = sorted(set(raw) - set(SUITE_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown keys {', '.join(unknown)} (allowed: {', '.join(SUITE_KEYS)})")
    if raw.get("kind") != "tuning":
        raise ValueError(f"kind: expected 'tuning' in {source}; got {raw.get('kind')!r}")
    problem = raw.get("problem", {})
    if not isinstance(problem, Mapping):
        raise ValueError(f"problem: expected a table of RecoveryProblem knobs; got {problem!r}")
    problem = dict(problem)
    problem_name = str(problem.pop("name", "default"))
    gates = raw.get("gates", [])
    if not isinstance(gates, list):
        raise ValueError(f"gates: expected a list of gate names; got {gates!r}")
    options: dict[str, Any] = {key: raw[key] for key in _OPTIONS if key in raw}
    return TuningConfig(
        problem=RecoveryProblem.from_dict(problem), gates=tuple(gates), name=str(raw.get("name", "tuning")),
        tune_seeds=_seed_list("tune_seeds", raw.get("tune_seeds", 3), 0),
        heldout_seeds=_seed_list("heldout_seeds", raw.get("heldout_seeds", 10), HELDOUT_START),
        problem_name=problem_name, **options,
    )


def load_tuning_suite(path: str | os.PathLike[str]) -> TuningConfig:
    """Read a ``kind = "tuning"`` TOML file (a path, or a name under ``suites/``) into its ``TuningConfig``."""
    import tomllib

    from harness.suite import SUITES_DIR

    path = Path(path)
    if not path.is_file() and (SUITES_DIR / f"{path.name.removesuffix('.toml')}.toml").is_file():
        path = SUITES_DIR / f"{path.name.removesuffix('.toml')}.toml"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"suite: cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"suite: {path} is not TOML: {exc}") from None
    return tuning_config(raw, str(path))
