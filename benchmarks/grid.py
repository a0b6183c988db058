"""The asv parameter grid, built from the harness's suites (one source of truth for what is measured).

* Timing: the cases of ``suites/<GATEBENCH_ASV_SUITE>.toml`` (default ``regress``) as expanded by
  ``harness.suite.expand``. asv parameters are the product ``gate x framework x impl x mode x shape``; the
  combinations that the suite does not hold are skipped (``NotImplementedError`` in ``setup``, asv's way).
  ``shape`` is ``device/gating/b<batch>/p<input_dim>/n<experts>/k<k>/<dtype>``.
* Recovery: ``gate x framework`` of ``suites/<GATEBENCH_ASV_RECOVERY_SUITE>.toml`` (default ``recovery``),
  its first problem, seed 0.

``GATEBENCH_ASV_FILTER`` narrows both, as ``key=value[|value];key=value`` over case columns (for example
``framework=torch;mode=fwd;experts=16`` for the smoke subset the tests run). asv passes the environment through
to its benchmark processes, so discovery and runs see the same grid.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from harness.cases import Case
from harness.suite import expand, filter_params, load_suite

SUITE = os.environ.get("GATEBENCH_ASV_SUITE", "regress")
RECOVERY_SUITE = os.environ.get("GATEBENCH_ASV_RECOVERY_SUITE", "recovery")
PARAM_NAMES: list[str] = ["gate", "framework", "impl", "mode", "shape"]


def parse_filter(text: str | None) -> dict[str, list[str]]:
    """``"framework=torch;mode=fwd|fwdbwd"`` -> ``{"framework": ["torch"], "mode": ["fwd", "fwdbwd"]}``."""
    out: dict[str, list[str]] = {}
    for part in (text or "").split(";"):
        if not part.strip():
            continue
        key, sep, values = part.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ValueError(
                f"GATEBENCH_ASV_FILTER: expected key=value[|value];...; got {part!r} in {text!r}"
            )
        out[key.strip()] = [v.strip() for v in values.split("|")]
    return out


FILTER = parse_filter(os.environ.get("GATEBENCH_ASV_FILTER"))


def shape_label(case: Case) -> str:
    b = "-" if case.batch is None else case.batch
    p = "-" if case.input_dim is None else case.input_dim
    return f"{case.device}/{case.gating}/b{b}/p{p}/n{case.experts}/k{case.k}/{case.dtype}"


def _timing_cases() -> dict[tuple[str, ...], Case]:
    suite = load_suite(SUITE)
    kept = filter_params([c.params() for c in expand(suite)], FILTER)
    cases = [Case.from_params(p) for p in kept]
    return {(c.gate, c.framework, c.impl, c.mode, shape_label(c)): c for c in cases}


# The suite's timing settings, as the harness of the measured commit gives them (read them as a mapping: a dict
# at older commits, ``harness.suite.TimingSettings`` since).
SETTINGS: Mapping[str, Any] = load_suite(SUITE).settings
CASES = _timing_cases()


def _ordered(index: int) -> list[str]:
    seen: dict[str, None] = {}
    for key in CASES:
        seen.setdefault(key[index], None)
    return list(seen)


PARAMS: list[list[str]] = [_ordered(i) for i in range(len(PARAM_NAMES))]


def case_of(*values: str) -> Case:
    """The suite's case for one asv parameter combination; ``NotImplementedError`` (asv: skip) if none."""
    case = CASES.get(tuple(values))
    if case is None:
        raise NotImplementedError(f"not in suite {SUITE!r}: {dict(zip(PARAM_NAMES, values, strict=True))}")
    return case


def _recovery_cases() -> dict[tuple[str, str], dict[str, Any]]:
    from harness.recovery import suite as recovery_suite

    raw = dict(load_suite(RECOVERY_SUITE).raw)
    raw["seeds"] = [0]
    raw["problems"] = list(raw.get("problems", [{"name": "default"}]))[:1]
    kept = filter_params(
        recovery_suite.expand(raw), {k: v for k, v in FILTER.items() if k in ("gate", "framework")}
    )
    return {(p["gate"], p["framework"]): dict(p) for p in kept}


RECOVERY_CASES = _recovery_cases()
RECOVERY_PARAM_NAMES: list[str] = ["gate", "framework"]
RECOVERY_PARAMS: list[list[str]] = [
    list(dict.fromkeys(k[0] for k in RECOVERY_CASES)),
    list(dict.fromkeys(k[1] for k in RECOVERY_CASES)),
]


def recovery_case_of(gate: str, framework: str) -> dict[str, Any]:
    """The identifying columns of the recovery case of one asv parameter combination."""
    case_params = RECOVERY_CASES.get((gate, framework))
    if case_params is None:
        raise NotImplementedError(f"not in recovery suite {RECOVERY_SUITE!r}: {gate}, {framework}")
    return case_params
