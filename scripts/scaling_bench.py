"""Wall time of a recovery suite run serially, with --jobs 2 and on a local Ray cluster of 2 CPUs; written as JSON.

    python -m scripts.scaling_bench --out docs/results/scaling_cpu.json [--suite suites/recovery.toml] [--jobs 2]

Each mode runs in a fresh Python process (as ``gatebench run`` would: imports included), one after the other, into
its own results file; the script records each mode's wall time, the speed-up over serial, Ray's start-up
(``RayExecutor.startup_s``: ``ray.init`` of the local cluster), the load average before and after each mode, and
whether every case's metrics were the same in every mode (``same_metrics_as_first``: as in the first mode).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts._common import parser as make_parser
from scripts._common import write_json

_RUN = """
import json, sys, time
start = time.perf_counter()
from harness.env import quiet_frameworks
quiet_frameworks()  # as the command line does: TF's oneDNN ops off in the driver as in the workers
from harness.executors import make_executor
from harness.runner import run_suite
mode, jobs = sys.argv[3], int(sys.argv[4])
executor = make_executor(jobs=1 if mode == "serial" else jobs, executor="ray" if mode == "ray" else "local")
summary = run_suite(sys.argv[1], sys.argv[2], executor=executor)
print("RESULT " + json.dumps({"wall_s": time.perf_counter() - start, "ok": summary.count("ok"),
                              "rows": len(summary.rows), "startup_s": getattr(executor, "startup_s", None)}))
"""
_METRICS = ("f1", "precision", "recall", "exact_support_rate", "nnz", "test_mse", "final_loss")


def _run(mode: str, suite: str, out: Path, jobs: int) -> dict:
    load = os.getloadavg()[0]
    env = {**os.environ, "PYTHONPATH": str(Path.cwd()), "TF_CPP_MIN_LOG_LEVEL": "3", "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run([sys.executable, "-c", _RUN, suite, str(out), mode, str(jobs)], env=env,
                          capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{mode}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return {"mode": mode, **json.loads(lines[-1][7:]), "load_before": load, "load_after": os.getloadavg()[0]}


def _metrics(path: Path) -> dict:
    from harness.results import read_rows

    return {row["case_id"]: json.dumps([row.get(key) for key in _METRICS]) for row in read_rows(path).rows}


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--suite", default="suites/recovery.toml")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["serial", "jobs", "ray"], choices=["serial", "jobs", "ray"])
    args = parser.parse_args()
    runs, metrics = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            path = Path(tmp) / f"{mode}.jsonl"
            runs.append(_run(mode, args.suite, path, args.jobs))
            metrics[mode] = _metrics(path)
            print(json.dumps(runs[-1]), flush=True)
    serial = next((run["wall_s"] for run in runs if run["mode"] == "serial"), None)
    for run in runs:
        run["speedup"] = serial / run["wall_s"] if serial else None
    for run in runs:
        run["same_metrics_as_first"] = metrics[run["mode"]] == metrics[args.modes[0]]
    same = all(run["same_metrics_as_first"] for run in runs)
    write_json(args.out, {"suite": args.suite, "jobs": args.jobs, "cores": len(os.sched_getaffinity(0)),
                          "runs": runs, "same_metrics_in_every_mode": same})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
