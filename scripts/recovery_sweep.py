"""Equal-budget sweep of training knobs on the default static recovery problem (the DSelect-k investigation).

Every setting runs the same seeds, steps and data for the gates named; rows go to a recovery results file
(``harness.results``), one per (setting, gate, seed), with the full problem definition in each row, and a
summary (mean +- s.e. of F1, exact-support rate, nnz) is printed per setting.

    python -m scripts.recovery_sweep --out docs/results/recovery_sweep.jsonl \
        --grid '{"dselect_z_init": [0.01, 0.1, 0.3], "entropy_reg": [0.0, 0.001, 0.003]}' --gates dselect_k

Summary table (Markdown) of a sweep file, each setting tested against the baseline gate's rows with the same
number of steps, learning rate and seed (paired Wilcoxon), taken from the sweep file or from ``--baseline-rows``
(``harness.recovery.report.summarise_groups``, the summariser of the recovery CLI and report):

    python -m scripts.recovery_sweep --summary docs/results/recovery_sweep.jsonl \
        --baseline-rows docs/results/recovery.jsonl --baseline-gate topk
"""

from __future__ import annotations

import itertools
import json

from harness.recovery.data import generate
from harness.recovery.metrics import mean_se
from harness.recovery.problem import RecoveryProblem
from harness.recovery.report import summarise_groups
from harness.recovery.run import run_one
from harness.recovery.suite import framework_versions
from harness.results import ResultsWriter, case_id, completed_case_ids, make_row, read_rows
from scripts._common import parser as make_parser
from scripts._common import quiet_frameworks

SUMMARY_METRICS = (("f1", 3), ("exact_support_rate", 3), ("nnz", 2))


def summary(path: str, baseline_rows: list[str], baseline_gate: str, framework: str) -> str:
    """Markdown: per sweep setting and gate, mean +- s.e. of F1, exact-support rate and nnz, and the paired
    Wilcoxon test of F1 against ``baseline_gate`` (same framework, steps, learning rate and seed; the same problem
    when the baseline has it, else the one problem it has at those steps and learning rate, else no test)."""
    rows = [r for r in read_rows(path).rows if r["framework"] == framework]
    pool = [r for r in read_rows([path, *baseline_rows]).rows if r["framework"] == framework]
    groups = summarise_groups(rows, ("problem", "gate"), baseline=baseline_gate, tested=("f1",),
                              metrics=[m for m, _ in SUMMARY_METRICS], match=("problem", "steps", "lr"),
                              relax=("problem",), baseline_rows=pool)
    order = {key: i for i, key in reversed(list(enumerate((r["problem"], r["gate"]) for r in rows)))}
    lines = [f"| setting | gate | seeds | F1 | exact support | nnz | Wilcoxon F1 vs {baseline_gate} (p) |",
             "|---|---|---|---|---|---|---|"]
    for g in sorted(groups, key=lambda g: order[(g["problem"], g["gate"])]):
        cells = [f"{g['stats'][m]['mean']:.{d}f} ± {g['stats'][m]['se']:.{d}f}" for m, d in SUMMARY_METRICS]
        w = g["tests"].get("f1")
        test = f"{w['median_diff']:+.3f} (p={w['p_value']:.3g}, {w['pairs']} seeds)" if w and w["pairs"] else "-"
        lines.append(f"| {g['problem'].removeprefix('sweep:')} | {g['gate']} | {g['runs']} | " + " | ".join(cells)
                     + f" | {test} |")
    return "\n".join(lines)


def main() -> None:
    parser = make_parser(__doc__, out_required=False, out_help="results file (JSON Lines); existing cases are skipped")
    parser.add_argument("--summary", help="print the summary table of this sweep file and exit")
    parser.add_argument("--baseline-rows", nargs="*", default=[], help="more results files holding baseline rows")
    parser.add_argument("--baseline-gate", default="topk")
    parser.add_argument("--grid", help="JSON object: RecoveryProblem field -> list of values")
    parser.add_argument("--base", default="{}", help="JSON object: fixed changes to the default problem")
    parser.add_argument("--gates", nargs="+", default=["dselect_k"])
    parser.add_argument("--framework", default="torch", choices=["torch", "tf"])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    quiet_frameworks()
    if args.summary:
        print(summary(args.summary, args.baseline_rows, args.baseline_gate, args.framework))
        return
    if not args.out or not args.grid:
        parser.error("--out and --grid are required to run a sweep")
    if args.framework == "torch":
        import torch

        torch.set_num_threads(1)
    grid, base = json.loads(args.grid), RecoveryProblem(**json.loads(args.base))
    done, writer = completed_case_ids(args.out), ResultsWriter(args.out)
    for combo in itertools.product(*grid.values()):
        changes = dict(zip(grid, combo, strict=True))
        problem = base.replace(**changes)
        name = "sweep:" + ",".join(f"{k}={v}" for k, v in changes.items())
        for gate in args.gates:
            runs = []
            for seed in range(args.seeds):
                params = {"gate": gate, "framework": args.framework, "seed": seed, "problem": name,
                          **problem.to_dict()}
                if case_id(params) in done:
                    continue
                values = run_one(problem, gate, args.framework, seed, generate(problem, seed))
                writer.write(make_row("recovery", "recovery_sweep", params, "ok",
                                      extra_provenance=framework_versions(args.framework), **values))
                runs.append(values)
            if runs:
                stats = {m: mean_se([r[m] for r in runs])[:2] for m in ("f1", "exact_support_rate", "nnz")}
                print(f"{name} {gate}: " + ", ".join(f"{m} {mu:.3f} ± {se:.3f}" for m, (mu, se) in stats.items()),
                      flush=True)


if __name__ == "__main__":
    main()
