"""First-step parity of the PyTorch and TensorFlow recovery loops on one problem: identical data and initial
parameters, and the largest absolute difference of every first-step gradient, per gate; written as JSON.

    python -m scripts.recovery_parity --out docs/results/recovery_parity.json [--seeds 0 1 2]
"""

from __future__ import annotations

import json

import numpy as np

from harness.recovery.data import generate
from harness.recovery.problem import RecoveryProblem
from harness.recovery.steps import initial_params
from scripts._common import parser as make_parser
from scripts._common import quiet_frameworks, write_json


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--problem", default="{}", help="JSON object: changes to the default problem")
    args = parser.parse_args()
    quiet_frameworks()
    import tensorflow as tf
    import torch

    from harness.recovery import train_tf, train_torch

    problem = RecoveryProblem(**json.loads(args.problem)).replace(steps=1, eval_every=1)
    out = {"problem": problem.to_dict(), "seeds": args.seeds, "gates": {}}
    for gate in ("softmax", "topk", "dselect_k", "hard_concrete"):
        worst, worst_rel, largest = 0.0, 0.0, 0.0
        for seed in args.seeds:
            data = generate(problem, seed)
            init = initial_params(data, gate)  # the one NumPy source both loops start from
            a, b = train_torch.train(data, gate), train_tf.train(data, gate)
            for key in init:
                diff = float(np.abs(a.first_grads[key] - b.first_grads[key]).max())
                size = float(np.abs(a.first_grads[key]).max())
                worst, largest = max(worst, diff), max(largest, size)
                worst_rel = max(worst_rel, diff / size if size > 0 else 0.0)
        out["gates"][gate] = {"max_abs_diff": worst, "max_rel_diff": worst_rel, "max_abs_grad": largest,
                              "params": sorted(init)}
        print(f"{gate}: max |grad_torch - grad_tf| = {worst:.3g} (largest |grad| {largest:.3g})", flush=True)
    write_json(args.out, out, extra_provenance={"torch": torch.__version__, "tensorflow": tf.__version__})


if __name__ == "__main__":
    main()
