"""``kind = "prediction"`` suites: one study per framework and gating, read from TOML.

```toml
name = "prediction_default"
kind = "prediction"
gates = ["softmax", "topk", "dselect_k", "hard_concrete"]
frameworks = ["torch", "tf"]
gatings = ["static"]          # or ["static", "per_example"]
trials = 8                    # per gate; 0: no tuning, every gate at the [problem] knobs
tune_seeds = 1                # S: seeds 0..S-1, or a list
heldout_seeds = 10            # R: seeds 1000..1000+R-1, or a list
sampler = "tpe"
seed = 0
baseline = "topk"
[problem]                     # PredictionProblem knobs; name: the problem column
name = "digits2"
steps = 1000
```

``load_prediction_suite(path or dict) -> (name, [PredictionStudy, ...])``. ``expand(suite dict)``: the identifying
columns of the fixed-configuration runs (``trials = 0``: every gate x framework x gating x held-out seed at the
problem's knobs), for a generic runner of ``harness.tasks.Task(kind="prediction")``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .problem import PredictionProblem
from .study import HELDOUT_START, PredictionStudy

__all__ = ["KEYS", "load_prediction_suite", "studies_of", "expand"]

KEYS: frozenset[str] = frozenset(("name", "kind", "gates", "frameworks", "gatings", "trials", "tune_seeds",
                                  "heldout_seeds", "sampler", "seed", "baseline", "problem", "description"))


def _seeds(value: Any, start: int) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"seeds: expected a count >= 1 or a list of seeds; got {value!r}")
        return tuple(range(start, start + value))
    return tuple(value) if isinstance(value, list) else value


def _list(raw: Mapping[str, Any], key: str, default: list[str]) -> list[str]:
    value = raw.get(key, default)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError(f"{key}: expected a non-empty list of names; got {value!r}")
    return value


def studies_of(raw: Mapping[str, Any]) -> tuple[str, list[PredictionStudy]]:
    """The studies of a suite dict (checked: unknown keys, kind, problem knobs)."""
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise ValueError(f"suite: expected only {', '.join(sorted(KEYS))}; got unknown {', '.join(unknown)}")
    if raw.get("kind") != "prediction":
        raise ValueError(f"kind: expected 'prediction'; got {raw.get('kind')!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a suite name; got {name!r}")
    knobs = dict(raw.get("problem", {}))
    problem_name = str(knobs.pop("name", "digits"))
    studies = []
    for gating in _list(raw, "gatings", ["static"]):
        problem = PredictionProblem.from_dict({**knobs, "gating": gating})
        for framework in _list(raw, "frameworks", ["torch"]):
            studies.append(PredictionStudy(
                problem=problem, gates=tuple(_list(raw, "gates", ["softmax", "topk", "dselect_k", "hard_concrete"])),
                framework=framework, trials=raw.get("trials", 8), tune_seeds=_seeds(raw.get("tune_seeds", 1), 0),
                heldout_seeds=_seeds(raw.get("heldout_seeds", 10), HELDOUT_START),
                sampler=raw.get("sampler", "tpe"), seed=raw.get("seed", 0), baseline=raw.get("baseline", "topk"),
                name=f"{name}.{framework}.{gating}", problem_name=problem_name))
    return name, studies


def load_prediction_suite(source: str | Path | Mapping[str, Any]) -> tuple[str, list[PredictionStudy]]:
    """Read a ``kind = "prediction"`` suite from a TOML file (or a dict) into its studies."""
    if isinstance(source, Mapping):
        return studies_of(source)
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"suite: expected a TOML file; got {str(source)!r} (no such file)")
    with path.open("rb") as fh:
        return studies_of(tomllib.load(fh))


def expand(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The identifying columns of every fixed-configuration run of the suite (``trials`` must be 0)."""
    name, studies = studies_of(raw)
    if any(study.trials for study in studies):
        raise ValueError(f"trials: expected 0 for a flat list of runs (tuning runs depend on earlier trials: "
                         f"use harness.prediction.study.run_study); got {raw.get('trials', 8)!r}")
    return [study.params(gate, {}, -1, "test", seed) for study in studies for gate in study.gates
            for seed in study.heldout_seeds]
