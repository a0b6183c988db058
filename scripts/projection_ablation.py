"""Why the per-example DSelect-k gate projects once: ``x @ [W_z | W_w]`` against ``x @ W_z`` and ``x @ W_w``.

PyTorch, forward + backward (``sum(q * c)``, gradients of the weights and ``x``), the two forms interleaved round by
round in one process on the same gate and inputs, timed by ``harness.timer.time_fn``. Writes JSON.

    .venv/bin/python -m scripts.projection_ablation --out docs/results/projection_cpu.json
"""

from __future__ import annotations

import statistics

import torch

import gates.torch as gt
from harness.timer import time_fn
from scripts._common import parser as make_parser
from scripts._common import write_json

SHAPES = [(2048, 4096, 64, 4), (2048, 256, 256, 8)]  # (b, p, n, k): a wide routing input, and dselect_cpu's shape


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for b, p, n, k in SHAPES:
        gate = gt.make_gate("dselect_k", n, k, p, seed=0).train()
        m = gate.config.num_bits
        x = torch.randn(b, p, generator=gen, requires_grad=True)
        c = torch.randn(b, n, generator=gen)

        def one_projection(gate=gate, x=x, c=c):
            (gate(x) * c).sum().backward()

        def two_projections(gate=gate, x=x, c=c, k=k, m=m, n=n):
            z = (x @ gate.z_kernel + gate.z_bias).reshape(-1, k, m)
            w = x @ gate.w_kernel + gate.w_bias
            (gt.dselect_k_weights(z, w, n) * c).sum().backward()

        medians: dict[str, list[float]] = {"one_projection": [], "two_projections": []}
        for _ in range(args.rounds):
            for name, fn in (("two_projections", two_projections), ("one_projection", one_projection)):
                medians[name].append(time_fn(fn, warmup_ms=50, rep_ms=500).median_ms)
        one, two = statistics.median(medians["one_projection"]), statistics.median(medians["two_projections"])
        rows.append({"batch": b, "input_dim": p, "experts": n, "k": k, "round_medians_ms": medians,
                     "one_projection_ms": one, "two_projections_ms": two, "ratio_one_to_two": one / two})
        print(f"b={b} p={p} n={n} k={k}: one projection {one:.2f} ms, two {two:.2f} ms, ratio {one / two:.2f}")
    write_json(args.out, {"threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
