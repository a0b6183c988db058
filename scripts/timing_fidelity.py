#!/usr/bin/env python
"""Timing fidelity of the harness timer, measured in one run.

CPU: the harness median (``harness.timer.time_fn``) of fixed workloads against ``timeit`` on the same callables,
interleaved round by round so both see the same machine state. ``timeit`` is run two ways: one call per sample
(``repeat(n, number=1)``, the harness's sampling) and its usual batched loops (``autorange``); both are
recorded. Also the timer's result on an empty function through the PyTorch and TensorFlow adapters' CPU paths
(their ``sync``/event settings).
GPU (when PyTorch sees CUDA and Triton is importable): the harness median with CUDA events and L2 flush against
``triton.testing.do_bench`` on the same kernels (over 50 us).

Writes JSON (``--out``, default ``docs/results/timing_fidelity_<cpu|gpu>.json``) and prints a summary.

    python -m scripts.timing_fidelity [--device cpu|gpu] [--rounds 5] [--out FILE]
"""

from __future__ import annotations

import platform
import statistics
import sys
import timeit
from pathlib import Path

from harness.timer import time_fn
from scripts._common import parser as make_parser
from scripts._common import quiet_frameworks, write_json

ROOT = Path(__file__).resolve().parent.parent


def _timeit_median_ms(fn, target_ms: float = 100.0, repeat: int = 7) -> float:
    """``timeit``: calls per repeat chosen by ``Timer.autorange`` scaled to ~``target_ms``; median per-call time."""
    timer = timeit.Timer(fn)
    number, total = timer.autorange()
    number = max(1, int(number * target_ms / 1e3 / max(total, 1e-9)))
    return statistics.median(timer.repeat(repeat=repeat, number=number)) / number * 1e3


def cpu_workloads(threads: int) -> dict:
    """Fixed CPU workloads: PyTorch and TensorFlow matmuls, and a DSelect-k gate forward through each adapter.

    ``threads`` intra-op threads per framework (1 by default: on a shared machine, a multi-threaded kernel waits
    for its slowest thread, and descheduled threads make the run-to-run spread swamp what is being compared).
    """
    out = {}
    try:
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        a = torch.randn(384, 384)
        out["torch_matmul_384"] = lambda: a @ a
        from harness.adapters import torch as ta
        from harness.cases import Case

        w = ta.build_workload(Case("dselect_k", "torch", "cpu", "eager", "fwd", "per_example", 1024, 64, 64, 4))
        out["torch_dselect_k_fwd_b1024_n64"] = w.fn
    except ImportError:
        pass
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        b = tf.random.stateless_normal([384, 384], seed=[0, 0])
        out["tf_matmul_384"] = lambda: tf.linalg.matmul(b, b)
        from harness.adapters import tf as tfa
        from harness.cases import Case

        w = tfa.build_workload(Case("dselect_k", "tf", "cpu", "eager", "fwd", "per_example", 1024, 64, 64, 4))
        out["tf_dselect_k_fwd_b1024_n64"] = w.fn
    except ImportError:
        pass
    return out


def measure_cpu(rounds: int, threads: int) -> dict:
    """Per workload: ``rounds`` interleaved pairs (harness median over ~50 ms, then timeit median over ~50 ms)."""
    results: dict = {"device": "cpu", "threads": threads, "workloads": {}, "empty_function": {}}
    for name, fn in cpu_workloads(threads).items():
        harness_ms, timeit_ms, batched_ms = [], [], []
        timer = timeit.Timer(fn)
        for _ in range(rounds):  # interleaved: the same machine state for all three
            t = time_fn(fn, warmup_ms=10, rep_ms=50)
            harness_ms.append(t.median_ms)
            # timeit, one call per sample (what the harness does), as many samples as the harness took
            timeit_ms.append(statistics.median(timer.repeat(repeat=len(t.samples_ms), number=1)) * 1e3)
            # timeit's usual form: loops of many calls, the median loop time divided by the count
            batched_ms.append(_timeit_median_ms(fn, target_ms=10.0, repeat=5))
        h, t, b = (statistics.median(v) for v in (harness_ms, timeit_ms, batched_ms))
        results["workloads"][name] = {
            "harness_median_ms": h, "timeit_median_ms": t, "ratio": h / t, "within_10pct": abs(h / t - 1) <= 0.10,
            "timeit_batched_median_ms": b, "ratio_batched": h / b,
            "harness_rounds_ms": harness_ms, "timeit_rounds_ms": timeit_ms, "timeit_batched_rounds_ms": batched_ms,
        }
    for framework in ("torch", "tf"):
        try:
            from harness.adapters import get_adapter

            adapter = get_adapter(framework)
        except Exception as exc:  # noqa: BLE001
            results["empty_function"][framework] = {"skipped": str(exc)}
            continue
        t = time_fn(lambda: None, sync=adapter.sync_fn("cpu"), event_factory=adapter.event_factory("cpu"),
                    warmup_ms=5, rep_ms=50, min_reps=1000)
        results["empty_function"][framework] = {
            "median_us": t.median_ms * 1e3, "min_us": min(t.samples_ms) * 1e3, "p80_us": t.stats()["p80_ms"] * 1e3,
            "n_samples": len(t.samples_ms), "under_5us": t.median_ms * 1e3 < 5.0,
        }
    return results


def measure_gpu(rounds: int) -> dict:
    import torch
    import triton.testing

    from harness.adapters import torch as ta
    from harness.cases import Case

    results: dict = {"device": "gpu", "gpu": torch.cuda.get_device_name(), "workloads": {}, "empty_function": {}}
    a = torch.randn(4096, 4096, device="cuda")
    x = torch.randn(1 << 26, device="cuda")
    work = {"matmul_4096": lambda: a @ a, "exp_256MiB": lambda: torch.exp(x)}
    for case in (Case("dselect_k", "torch", "gpu", "eager", "fwd", "per_example", 16384, 2048, 256, 8),
                 Case("dselect_k", "torch", "gpu", "eager", "fwdbwd", "per_example", 16384, 4096, 64, 4)):
        w = ta.build_workload(case)
        if w.setup is None:
            work[f"dselect_k_{case.mode}_b{case.batch}_n{case.experts}"] = w.fn
        else:  # a backward workload needs its setup inside the timed call for do_bench; same for both
            work[f"dselect_k_{case.mode}_b{case.batch}_n{case.experts}"] = (lambda w=w: (w.setup(), w.fn()))
    flush = ta.flush_fn("gpu")
    for name, fn in work.items():
        harness_ms, triton_ms = [], []
        for _ in range(rounds):
            harness_ms.append(time_fn(fn, sync=torch.cuda.synchronize, event_factory=ta.event_factory("gpu"),
                                      flush=flush, warmup_ms=25, rep_ms=100).median_ms)
            triton_ms.append(float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")))
        h, t = statistics.median(harness_ms), statistics.median(triton_ms)
        results["workloads"][name] = {
            "harness_median_ms": h, "do_bench_median_ms": t, "ratio": h / t, "within_5pct": abs(h / t - 1) <= 0.05,
            "over_50us": t > 0.05, "harness_rounds_ms": harness_ms, "do_bench_rounds_ms": triton_ms,
        }
    return results


def main() -> int:
    quiet_frameworks()
    parser = make_parser(__doc__, out_required=False,
                         out_help="JSON file to write (default docs/results/timing_fidelity_<device>.json)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per framework on the CPU")
    args = parser.parse_args()
    results = measure_cpu(args.rounds, args.threads) if args.device == "cpu" else measure_gpu(args.rounds)
    results["command"] = " ".join([Path(sys.executable).name] + sys.argv)
    out = write_json(args.out or ROOT / "docs" / "results" / f"timing_fidelity_{args.device}.json", results,
                     extra_provenance={"python_impl": platform.python_implementation()}, indent=2)
    for name, r in results["workloads"].items():
        ref = r.get("timeit_median_ms", r.get("do_bench_median_ms"))
        line = f"{name:32s} harness {r['harness_median_ms']:.4f} ms  reference {ref:.4f} ms  ratio {r['ratio']:.3f}"
        if "ratio_batched" in r:
            line += f"  (timeit batched {r['timeit_batched_median_ms']:.4f} ms, ratio {r['ratio_batched']:.3f})"
        print(line)
    for name, r in results["empty_function"].items():
        print(f"empty function ({name}): " + (f"median {r['median_us']:.2f} us, min {r['min_us']:.2f} us"
                                             if "median_us" in r else r["skipped"]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
