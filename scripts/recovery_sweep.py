"""Equal-budget sweep of training knobs on the default static recovery problem (the DSelect-k investigation).

Every setting runs the same seeds, steps and data for the gates named; rows go to a recovery results file
(``harness.results``), one per (setting, gate, seed), with the full problem definition in each row, and a
summary (mean +- s.e. of F1, exact-support rate, nnz) is printed per setting.

    python scripts/recovery_sweep.py --out docs/results/recovery_sweep.jsonl \
        --grid '{"dselect_z_init": [0.01, 0.1, 0.3], "entropy_reg": [0.0, 0.001, 0.003]}' --gates dselect_k
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="results file (JSON Lines); existing cases are skipped")
    parser.add_argument("--grid", required=True, help="JSON object: RecoveryProblem field -> list of values")
    parser.add_argument("--base", default="{}", help="JSON object: fixed changes to the default problem")
    parser.add_argument("--gates", nargs="+", default=["dselect_k"])
    parser.add_argument("--framework", default="torch", choices=["torch", "tf"])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
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
