"""Why does a DSelect-k task miss its planted support? Per wrong task of one run: each selector's mixing weight
``alpha_i = softmax(w)_i``, whether all its bits are saturated (``|z| >= gamma/2``: zero gradient from then on),
the expert it points to, and whether that expert is planted.

    python -m scripts.recovery_diagnose --seed 0 [--problem '{"dselect_z_init": 0.3}'] [--out counts.json]
"""

from __future__ import annotations

import json

import numpy as np

from gates import reference as R
from harness.recovery.data import generate
from harness.recovery.problem import RecoveryProblem
from scripts._common import parser as make_parser
from scripts._common import write_json


def main() -> None:
    parser = make_parser(__doc__, out_required=False, out_help="also write the counts and the problem as JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--problem", default="{}")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from harness.recovery import train_torch

    pr = RecoveryProblem(**json.loads(args.problem))
    data = generate(pr, args.seed)
    res = train_torch.train(data, "dselect_k")
    z, w = res.final_params["gate/z_logits"], res.final_params["gate/w_logits"]  # (T, k, m), (T, k)
    alpha = np.exp(w - w.max(-1, keepdims=True))
    alpha /= alpha.sum(-1, keepdims=True)
    r = R.dselect_k_selectors(z, pr.experts, pr.gamma)  # (T, k, n)
    saturated = (np.abs(z) >= pr.gamma / 2).all(-1)  # (T, k)
    counts = {"wrong_tasks": 0, "selectors": 0, "saturated_on_unplanted": 0, "unsaturated": 0,
              "duplicate_planted": 0}
    for t in range(pr.tasks):
        sel = res.final_weights[t] > 0
        if np.array_equal(sel, data.support[t]):
            continue
        counts["wrong_tasks"] += 1
        print(f"task {t}: planted {np.flatnonzero(data.support[t]).tolist()}, selected {np.flatnonzero(sel).tolist()}")
        seen = set()
        for i in range(pr.k):
            e = int(r[t, i].argmax())
            counts["selectors"] += 1
            planted = bool(data.support[t, e])
            if not saturated[t, i]:
                counts["unsaturated"] += 1
            elif not planted:
                counts["saturated_on_unplanted"] += 1
            elif e in seen:
                counts["duplicate_planted"] += 1
            seen.add(e)
            print(f"  selector {i}: alpha {alpha[t, i]:.3f}, saturated {bool(saturated[t, i])}, "
                  f"top expert {e} (r={r[t, i, e]:.2f}, planted {planted})")
    print(json.dumps(counts))
    if args.out:
        write_json(args.out, {"problem": pr.to_dict(), "seed": args.seed, "counts": counts})


if __name__ == "__main__":
    main()
