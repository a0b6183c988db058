"""Equal-budget sweep of training knobs on the default static recovery problem (the DSelect-k investigation).

Every setting runs the same seeds, steps and data for the gates named; rows go to a recovery results file
(``harness.results``), one per (setting, gate, seed), with the full problem definition in each row, and a
summary (mean +- s.e. of F1, exact-support rate, nnz) is printed per setting.

    python scripts/recovery_sweep.py --out docs/results/recovery_sweep.jsonl \
        --grid '{"dselect_z_init": [0.01, 0.1, 0.3], "entropy_reg": [0.0, 0.001, 0.003]}' --gates dselect_k

Summary table (Markdown) of a sweep file, each setting tested against the baseline gate's rows with the same
number of steps, learning rate and seed (paired Wilcoxon), taken from the sweep file or from ``--baseline-rows``:

    python scripts/recovery_sweep.py --summary docs/results/recovery_sweep.jsonl \
        --baseline-rows docs/results/recovery.jsonl --baseline-gate topk
"""

from __future__ import annotations

import argparse
import itertools
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from harness.recovery.data import generate  # noqa: E402
from harness.recovery.metrics import mean_se  # noqa: E402
from harness.recovery.problem import RecoveryProblem  # noqa: E402
from harness.recovery.run import run_one  # noqa: E402
from harness.recovery.suite import framework_versions  # noqa: E402
from harness.results import ResultsWriter, case_id, completed_case_ids, make_row  # noqa: E402


def summary(path: str, baseline_rows: list[str], baseline_gate: str, framework: str) -> str:
    """Markdown: per sweep setting and gate, mean +- s.e. of F1, exact-support rate and nnz, and the paired
    Wilcoxon test of F1 against ``baseline_gate`` (same framework, steps, learning rate and seed)."""
    from harness.recovery.metrics import paired_wilcoxon
    from harness.results import read_rows

    rows = [r for r in read_rows([path, *baseline_rows]).rows if r["status"] == "ok" and r["framework"] == framework]
    base = {(r["steps"], r["lr"], r["seed"]): r["f1"] for r in rows if r["gate"] == baseline_gate}
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in read_rows(path).rows:
        if r["status"] == "ok" and r["framework"] == framework:
            groups.setdefault((r["problem"], r["gate"]), []).append(r)
    lines = [f"| setting | gate | seeds | F1 | exact support | nnz | Wilcoxon F1 vs {baseline_gate} (p) |",
             "|---|---|---|---|---|---|---|"]
    for (name, gate), runs in groups.items():
        cells = []
        for metric, digits in (("f1", 3), ("exact_support_rate", 3), ("nnz", 2)):
            mean, se, _ = mean_se([r[metric] for r in runs])
            cells.append(f"{mean:.{digits}f} ± {se:.{digits}f}")
        keys = [(r["steps"], r["lr"], r["seed"]) for r in runs]
        paired = [(r["f1"], base[key]) for r, key in zip(runs, keys, strict=True) if key in base]
        test = "-"
        if paired and gate != baseline_gate:
            w = paired_wilcoxon([a for a, _ in paired], [b for _, b in paired])
            test = f"{w['median_diff']:+.3f} (p={w['p_value']:.3g}, {w['pairs']} seeds)"
        lines.append(f"| {name.removeprefix('sweep:')} | {gate} | {len(runs)} | " + " | ".join(cells) + f" | {test} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary", help="print the summary table of this sweep file and exit")
    parser.add_argument("--baseline-rows", nargs="*", default=[], help="more results files holding baseline rows")
    parser.add_argument("--baseline-gate", default="topk")
    parser.add_argument("--out", help="results file (JSON Lines); existing cases are skipped")
    parser.add_argument("--grid", help="JSON object: RecoveryProblem field -> list of values")
    parser.add_argument("--base", default="{}", help="JSON object: fixed changes to the default problem")
    parser.add_argument("--gates", nargs="+", default=["dselect_k"])
    parser.add_argument("--framework", default="torch", choices=["torch", "tf"])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
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
