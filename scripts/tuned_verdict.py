"""The tuned verdict: every gate tuned with the same budget on each named recovery problem, judged on held-out seeds.

    python -m scripts.tuned_verdict --out docs/results/tuned_verdict.json [--work docs/results/tuned_verdict] \
        [--frameworks torch tf] [--problems default hard ...] [--trials 20] [--tune-seeds 3] [--heldout-seeds 10]

One ``harness.tuning`` study per (problem, framework): the problems of ``suites/recovery_problems.toml`` (their
knobs; the rest at ``RecoveryProblem``'s defaults), the gates ``--gates`` (default: the four of the DSelect-k paper's
comparison), ``--trials`` Optuna TPE trials per gate (sampler seed 0) scored by the mean validation MSE on the
tuning seeds, every trial whose gate keeps more than ``k + 0.5`` experts on average failing (``max_nnz``: the
question is which ``k`` of the ``n`` experts a gate picks, so a gate that has not become ``k``-sparse has not
answered it), then the best configuration rerun on the held-out seeds 1000.. and tested against Top-k (paired
Wilcoxon, Holm across the gates). Each study is its own results file under ``--work``
(``<work>/verdict_<problem>_<framework>.jsonl``), resumed when it is there: a killed run loses no finished run.

For comparison every gate is also run untuned (the problem's default configuration) on the same held-out seeds.
Writes JSON (``--out``): per study the verdict (``harness.tuning.study.collect``), its wall time in this invocation
(``wall_s``), the sum of its runs' training time (``train_ms``), and provenance. Prints the verdict table as
Markdown. ``--merge A.json B.json`` writes ``--out`` from earlier outputs (the frameworks run side by side, one
process each: ``--frameworks torch`` and ``--frameworks tf``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scripts._common import parser as make_parser
from scripts._common import quiet_frameworks, write_json

ROOT = Path(__file__).resolve().parent.parent
PROBLEMS_SUITE = ROOT / "suites/recovery_problems.toml"
GATES = ("softmax", "topk", "dselect_k", "hard_concrete")


def named_problems(path: Path = PROBLEMS_SUITE) -> dict[str, dict[str, Any]]:
    """``{name: knobs}`` of the ``[[problems]]`` of a recovery suite file."""
    import tomllib

    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    return {entry["name"]: {k: v for k, v in entry.items() if k != "name"} for entry in raw["problems"]}


def study_config(name: str, knobs: Mapping[str, Any], framework: str, args: Any) -> Any:
    from harness.recovery.problem import RecoveryProblem
    from harness.tuning.study import HELDOUT_START, TuningConfig

    problem = RecoveryProblem.from_dict(dict(knobs))
    return TuningConfig(problem=problem, gates=tuple(args.gates), framework=framework, trials=args.trials,
                        tune_seeds=tuple(range(args.tune_seeds)),
                        heldout_seeds=tuple(range(HELDOUT_START, HELDOUT_START + args.heldout_seeds)),
                        sampler="tpe", seed=0, baseline="topk", name=f"verdict_{name}_{framework}",
                        problem_name=name, max_nnz=problem.k + 0.5)


def run_study(config: Any, work: Path) -> dict[str, Any]:
    """Run (or resume) one study; its verdict with ``wall_s`` (this invocation) and ``train_s`` (all its runs)."""
    from harness.results import read_rows
    from harness.tuning.study import results_path, run_tuning

    state = {"total": 0, "done": 0, "first": 0, "start": time.perf_counter()}

    def on_plan(total: int, done: int) -> None:
        state.update(total=total, done=done, first=done)

    def on_row(row: Mapping[str, Any]) -> None:
        state["done"] += 1
        elapsed, new = time.perf_counter() - state["start"], state["done"] - state["first"]
        eta = elapsed / new * max(state["total"] - state["done"], 0)
        if new % 10 == 0 or state["done"] == state["total"]:
            print(f"  {config.name}: {state['done']}/{state['total']} runs, {elapsed:.0f} s, ETA {eta:.0f} s",
                  flush=True)

    start = time.perf_counter()
    result = run_tuning(config, work, resume=True, on_plan=on_plan, on_row=on_row)
    result["wall_s"] = time.perf_counter() - start
    rows = read_rows(results_path(config, work)).rows
    result["runs"] = len(rows)
    result["train_s"] = sum(float(r.get("train_ms") or 0.0) for r in rows) / 1000.0
    start = time.perf_counter()
    result["untuned"] = untuned(config)
    result["untuned_wall_s"] = time.perf_counter() - start
    return result


def untuned(config: Any) -> dict[str, Any]:
    """Every gate at the problem's default configuration on the study's held-out seeds (the seeds of a gate trained
    together), judged like the tuned ones (``harness.tuning.stats.compare_gates``): what tuning changed."""
    from harness.recovery.run import json_safe, run_seeds
    from harness.tuning.stats import compare_gates

    keep = ("seed", "f1", "exact_support_rate", "test_mse", "nnz")
    runs = {gate: [{k: run.get(k) for k in keep} for run in
                   run_seeds(config.problem, gate, config.framework, config.heldout_seeds)["runs"]]
            for gate in config.gates}
    verdict = compare_gates(runs, config.baseline)
    return json_safe({gate: {**verdict[gate], "runs": runs[gate]} for gate in config.gates})


def _cell(gate: Mapping[str, Any], metric: str) -> str:
    summary = (gate.get("summary") or {}).get(metric) or {}
    mean, se = summary.get("mean"), summary.get("se")
    if mean is None or mean != mean:
        return "-"
    return f"{mean:.3f} ± {se:.3f}" if se is not None and se == se else f"{mean:.3f}"


def _p(gate: Mapping[str, Any], metric: str) -> str:
    test = (gate.get("tests") or {}).get(metric)
    if not test or test["p_holm"] != test["p_holm"]:
        return "-"
    return f"{test['p_holm']:.3g} ({test['median_diff']:+.3f})"


def _params(best: Mapping[str, Any] | None) -> str:
    if not best:
        return "every trial failed"
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())


def table(studies: Sequence[Mapping[str, Any]]) -> str:
    """The verdict as one Markdown table: a row per (problem, framework, gate)."""
    head = ("| problem | fw | gate | held-out F1 | exact support | F1 vs Top-k: Holm p (median diff) | untuned F1 | "
            "best parameters | failed trials |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for study in studies:
        for gate, result in study["gates"].items():
            lines.append(f"| {study['problem_name']} | {study['framework']} | {gate} | {_cell(result, 'f1')} | "
                         f"{_cell(result, 'exact_support_rate')} | {_p(result, 'f1')} | "
                         f"{_cell(study.get('untuned', {}).get(gate, {}), 'f1')} | {_params(result.get('best'))} | "
                         f"{result['failed_trials']}/{result['trials']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = make_parser(__doc__)
    p.add_argument("--work", type=Path, default=ROOT / "docs/results/tuned_verdict")
    p.add_argument("--frameworks", nargs="+", default=["torch", "tf"])
    p.add_argument("--problems", nargs="+", default=None, help="default: every problem of the suite")
    p.add_argument("--gates", nargs="+", default=list(GATES))
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--tune-seeds", type=int, default=3)
    p.add_argument("--heldout-seeds", type=int, default=10)
    p.add_argument("--merge", nargs="+", type=Path, default=None,
                   help="write --out from these earlier outputs (e.g. one per framework, run side by side): their "
                        "studies in order; nothing runs")
    args = p.parse_args(argv)
    if args.merge:
        docs = [json.loads(path.read_text(encoding="utf-8")) for path in args.merge]
        studies = [study for doc in docs for study in doc["studies"]]
        write_json(args.out, {"protocol": docs[0]["protocol"], "studies": studies,
                              "merged_from": [{"file": path.name, "provenance": doc.get("provenance")}
                                              for path, doc in zip(args.merge, docs, strict=True)]})
        print(table(studies))
        return
    quiet_frameworks()
    problems = named_problems()
    unknown = sorted(set(args.problems or ()) - set(problems))
    if unknown:
        p.error(f"--problems: expected names of {PROBLEMS_SUITE.name} ({', '.join(problems)}); got {unknown}")
    names = args.problems or list(problems)
    studies = []
    for framework in args.frameworks:
        for name in names:
            studies.append(run_study(study_config(name, problems[name], framework, args), args.work))
    doc = {"protocol": {"trials": args.trials, "tune_seeds": args.tune_seeds, "heldout_seeds": args.heldout_seeds,
                        "gates": list(args.gates), "max_nnz": "k + 0.5", "sampler": "tpe", "seed": 0},
           "studies": studies}
    write_json(args.out, doc)
    print(table(studies))


if __name__ == "__main__":
    main()
