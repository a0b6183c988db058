#!/usr/bin/env python
"""A second Python thread in the timing process, quiet and under load: TF softmax/Top-k fwd+bwd with and without
a rich progress bar refreshing beside the timing loop.

    .venv/bin/python -m scripts.refresh_interference --out docs/results/refresh_interference.json [--rounds 30]

Four child processes, one after the other: {no bar, rich ``Progress`` auto-refreshing (what ``gatebench run``
drew until it refreshed per row)} x {quiet, one busy process per usable core (``scripts.noise_drift.burners``)}.
Each builds the TensorFlow softmax and Top-k ``fwdbwd`` workloads (static and per-example, b=64 p=32 n=16 k=4, one
thread) through the harness's adapter and times them interleaved, ``--rounds`` rounds of 5 calls each, reading
both the wall clock (``perf_counter``) and the thread's CPU time (``thread_time``) around every call. Writes the
medians and the softmax/Top-k ratios per condition, and provenance.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from harness.machine import usable_cores
from scripts._common import parser as make_parser
from scripts._common import quiet_frameworks, write_json
from scripts.noise_drift import burners

GATES, GATINGS = ("softmax", "topk"), ("static", "per_example")


def _workloads() -> dict[tuple[str, str], Any]:
    from harness import cases, machine
    from harness.adapters import get_adapter
    from harness.suite import TimingSettings

    machine.set_threads("tf", 1)
    adapter, out = get_adapter("tf"), {}
    for gate in GATES:
        for gating in GATINGS:
            shape = dict(batch=64, input_dim=32) if gating == "per_example" else dict(batch=None, input_dim=None)
            params = dict(gate=gate, framework="tf", device="cpu", impl="eager", mode="fwdbwd", gating=gating,
                          experts=16, k=4, dtype="float32", **shape)
            out[(gate, gating)] = adapter.build_workload(cases.Case.from_params(params), TimingSettings())
    return out


def child(rounds: int, bar: bool) -> dict[str, Any]:
    """Time the four workloads in this process (the child's side); ``bar``: a rich Progress refreshing meanwhile."""
    progress = None
    if bar:
        from rich.console import Console
        from rich.progress import Progress

        progress = Progress(console=Console(file=open(os.devnull, "w"), force_terminal=True),  # noqa: SIM115
                            redirect_stdout=False, redirect_stderr=False)
        progress.start()
        progress.add_task("timing", total=None)
    loads = _workloads()
    wall: dict[tuple, list[float]] = {key: [] for key in loads}
    cpu: dict[tuple, list[float]] = {key: [] for key in loads}
    for workload in loads.values():
        for _ in range(10):
            if workload.setup:
                workload.setup()
            workload.fn()
    for _ in range(rounds):
        for key, workload in loads.items():
            for _ in range(5):
                if workload.setup:
                    workload.setup()
                t0, c0 = time.perf_counter(), time.thread_time()
                workload.fn()
                c1, t1 = time.thread_time(), time.perf_counter()
                wall[key].append((t1 - t0) * 1e3)
                cpu[key].append((c1 - c0) * 1e3)
    if progress is not None:
        progress.stop()
    out: dict[str, Any] = {}
    for gating in GATINGS:
        med = {(clock, gate): statistics.median(series[(gate, gating)]) for clock, series in (("wall", wall),
                                                                                          ("cpu", cpu))
               for gate in GATES}
        out[gating] = {f"{clock}_{gate}_ms": med[(clock, gate)] for clock, gate in med}
        for clock in ("wall", "cpu"):
            out[gating][f"{clock}_ratio"] = med[(clock, "softmax")] / med[(clock, "topk")]
    return out


def _spawn(rounds: int, bar: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "scripts.refresh_interference", "--child", "--rounds", str(rounds)]
    if bar:
        command.append("--bar")
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser(__doc__, out_required=False)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the measuring side, run by main
    p.add_argument("--bar", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quiet_frameworks()
    if args.child:
        print(json.dumps(child(args.rounds, args.bar)))
        return 0
    if args.out is None:
        p.error("--out: expected a JSON file to write")
    results: dict[str, Any] = {}
    for bar in (False, True):
        results[f"{'bar' if bar else 'no_bar'}_quiet"] = _spawn(args.rounds, bar)
        with burners(usable_cores(), 600):
            results[f"{'bar' if bar else 'no_bar'}_loaded"] = _spawn(args.rounds, bar)
    for name, value in results.items():
        print(name, {g: round(value[g]["wall_ratio"], 3) for g in GATINGS},
              {g: round(value[g]["wall_topk_ms"], 2) for g in GATINGS})
    write_json(args.out, {"rounds": args.rounds, "burners": usable_cores(), "conditions": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
