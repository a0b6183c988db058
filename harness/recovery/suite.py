"""The ``recovery`` suite: a declarative grid (gates x frameworks x problems x seeds) whose rows are the same
JSON Lines results as the timing suites (``harness.results``: resume, provenance).

Suite file (TOML)::

    name = "recovery"
    kind = "recovery"
    gates = ["softmax", "topk", "dselect_k", "hard_concrete"]
    frameworks = ["torch", "tf"]
    seeds = 10                      # an integer (seeds 0..9) or a list of seeds
    [[problems]]                    # one table per problem size; keys are RecoveryProblem fields
    name = "static16"
    gating = "static"
    experts = 16

``expand`` turns it into one flat dict of identifying columns (``params``) per case (``gate``, ``framework``,
``seed``, ``problem`` (name) and every field of the problem, defaults included, so a case id pins the whole
definition); ``run_case`` runs one and returns its metric columns. Suites are loaded (and expanded, so checked) by
``harness.suite.load_suite`` and run by the generic runner (``harness.runner.run_suite``: results file, resume,
executors; ``harness.tasks`` calls ``run_case``); both ``gatebench run SUITE`` and ``gatebench recover --suite
SUITE`` go through it.
"""

from __future__ import annotations

from typing import Any

from gates import FRAMEWORKS, GATE_NAMES

from .problem import RecoveryProblem

SUITE_KEYS = ("name", "kind", "description", "gates", "frameworks", "seeds", "problems")
CASE_KEYS = ("gate", "framework", "seed", "problem")


def _list(suite: dict[str, Any], key: str, allowed: tuple[str, ...]) -> list[str]:
    values = suite.get(key, list(allowed))
    if not isinstance(values, list) or not values or any(v not in allowed for v in values):
        raise ValueError(f"{key}: expected a non-empty list drawn from {', '.join(allowed)}; got {values!r}")
    return values


def expand(suite_dict: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict of identifying columns per case, ordered problem -> seed -> framework -> gate (a seed's runs share
    its data)."""
    unknown = sorted(set(suite_dict) - set(SUITE_KEYS))
    if unknown:
        raise ValueError(f"suite: unknown keys {', '.join(unknown)} (allowed: {', '.join(SUITE_KEYS)})")
    if suite_dict.get("kind", "recovery") != "recovery":
        raise ValueError(f"kind: expected 'recovery'; got {suite_dict.get('kind')!r}")
    gates = _list(suite_dict, "gates", GATE_NAMES)
    frameworks = _list(suite_dict, "frameworks", FRAMEWORKS)
    seeds = suite_dict.get("seeds", 10)
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
        seeds = list(range(seeds))
    if not isinstance(seeds, list) or not seeds or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds
    ):
        raise ValueError(f"seeds: expected an integer >= 1 or a list of integers >= 0; got {seeds!r}")
    problems = suite_dict.get("problems", [{"name": "default"}])
    if not isinstance(problems, list) or not problems or not all(isinstance(p, dict) for p in problems):
        raise ValueError(f"problems: expected a non-empty list of tables; got {problems!r}")
    cases = []
    for index, table in enumerate(problems):
        table = dict(table)
        name = str(table.pop("name", f"problem{index}"))
        problem = RecoveryProblem.from_dict(table).to_dict()  # validated, defaults filled in
        for seed in seeds:
            for framework in frameworks:
                for gate in gates:
                    cases.append({"gate": gate, "framework": framework, "seed": seed, "problem": name, **problem})
    return cases


def problem_of(params: dict[str, Any]) -> RecoveryProblem:
    return RecoveryProblem.from_dict({k: v for k, v in params.items() if k not in CASE_KEYS})


def run_case(params: dict[str, Any]) -> dict[str, Any]:
    """Run one case; return its metric columns (``f1``, ``precision``, ... see ``harness.schema.RECOVERY``). Raises
    on failure."""
    from .run import run_one

    missing = [key for key in CASE_KEYS if key not in params]
    if missing:
        raise ValueError(f"params: missing {', '.join(missing)}")
    return run_one(problem_of(params), params["gate"], params["framework"], params["seed"])


def framework_versions(framework: str) -> dict[str, str]:
    """Versions of the framework a case used (already imported by the case), for the row's provenance."""
    if framework == "torch":
        import torch

        return {"torch": torch.__version__}
    import tensorflow as tf

    return {"tensorflow": tf.__version__}
