"""Recovery throughput: runs per second of the one-run loop and of the batched loop (R runs at once), per framework.

    python -m scripts.recovery_throughput --out docs/results/recovery_throughput_cpu.json \
        [--gate dselect_k] [--serial-runs 4] [--sizes 10 40] [--frameworks torch tf]

Each measurement trains ``gate`` on the default recovery problem (600 steps), seeds 0.., and times the whole call
(data generation excluded; ``tf.function`` tracing included, once per run for the one-run loop and once per batch
for the batched one). Also checks that the batched runs give the one-run loop's F1 on the seeds both trained.
"""

from __future__ import annotations

import time

from harness.recovery.data import generate
from harness.recovery.problem import RecoveryProblem
from scripts._common import parser as make_parser
from scripts._common import quiet_frameworks, write_json


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def measure(gate: str, framework: str, serial_runs: int, sizes: list[int]) -> dict:
    from harness.recovery.run import score, train, train_many

    problem = RecoveryProblem()
    datas = [generate(problem, seed) for seed in range(max([serial_runs, *sizes]))]
    seconds, serial = _timed(lambda: [train(d, gate, framework) for d in datas[:serial_runs]])
    out = {"serial": {"runs": serial_runs, "seconds": seconds, "runs_per_s": serial_runs / seconds}}
    base = out["serial"]["runs_per_s"]
    for size in sizes:
        seconds, batched = _timed(lambda size=size: train_many(datas[:size], gate, framework))
        same = all(score(d, gate, a)["f1"] == score(d, gate, b)["f1"]
                   for d, a, b in zip(datas, serial, batched, strict=False))
        out[f"batched_R{size}"] = {"runs": size, "seconds": seconds, "runs_per_s": size / seconds,
                                   "speedup": size / seconds / base, "same_f1_as_serial": same}
    return out


def main() -> None:
    p = make_parser(__doc__)
    p.add_argument("--gate", default="dselect_k")
    p.add_argument("--serial-runs", type=int, default=4)
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 40])
    p.add_argument("--frameworks", nargs="+", default=["torch", "tf"])
    args = p.parse_args()
    quiet_frameworks()
    results = {fw: measure(args.gate, fw, args.serial_runs, args.sizes) for fw in args.frameworks}
    for fw, res in results.items():
        print(fw, {k: round(v["runs_per_s"], 2) for k, v in res.items()})
    write_json(args.out, {"gate": args.gate, "problem": RecoveryProblem().to_dict(), "results": results,
                          "note": "one intra-op thread per framework; a shared 2-core machine"})


if __name__ == "__main__":
    main()
