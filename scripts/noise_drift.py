#!/usr/bin/env python
"""How far gate/Top-k timing ratios drift between runs, on a quiet machine and under background CPU load.

Runs ``gatebench run SUITE --out FILE --fresh`` four times: twice quiet, then twice while one busy Python loop per
usable core burns the CPU (each burner ends by itself after ``--burn-seconds`` and is stopped in any case when the
loaded runs end). From each run's rows it takes, for every gate other than Top-k, its ``fwd`` and ``fwdbwd``
ratio to Top-k (``median_ms`` over ``median_ms`` of the row with the same framework, device, mode, gating, shape
and dtype; Top-k of the same implementation where there is one, else eager), and reports per ratio its values
quiet and loaded and the drifts (``max(a, b) / min(a, b)``): between the two quiet runs, between the two loaded
runs, between quiet and loaded (geometric means of each pair), and over all four runs. It also records the exit
codes of ``gatebench compare`` between the back-to-back runs (quiet vs quiet, loaded vs loaded): on the same
code, any non-zero exit is a false regression.

Writes JSON (``--out``): the ratios, drifts, the number of ratios whose drift over all four runs exceeds
``DRIFT_LIMIT``, the worst drift, the compare exit codes and provenance (commit, time, machine, load before and
after every run). It takes several minutes and loads every core: run it on a machine with nothing else to do.

    .venv/bin/python -m scripts.noise_drift [--suite suites/noise_drift.toml] [--threads 1] [--clock auto|wall|cpu]
        [--burn-seconds 900]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.machine import machine_state, usable_cores
from harness.results import latest_rows, provenance, read_rows
from reports.comparison import Pairing
from reports.rounds import per_round_ratio
from scripts._common import parser as make_parser
from scripts._common import quiet_frameworks

ROOT = Path(__file__).resolve().parent.parent

DRIFT_LIMIT = 1.35
BASELINE = "topk"
MODES = ("fwd", "fwdbwd")
# Columns on which a gate's row and its baseline row must agree.
MATCH_KEYS = ("framework", "device", "mode", "gating", "batch", "input_dim", "experts", "k", "dtype")
QUIET, LOADED = ("quiet1", "quiet2"), ("loaded1", "loaded2")
_BURNER = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__, out_required=False, out_help="JSON summary to write (default: %(default)s)")
    parser.set_defaults(out=ROOT / "docs/results/noise_drift_cpu.json")
    parser.add_argument("--suite", default=str(ROOT / "suites/noise_drift.toml"),
                        help="suite file or name (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=ROOT / "results/noise_drift",
                        help="folder for the four runs' results files (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="pass --threads N to gatebench run (only when given)")
    parser.add_argument("--clock", default=None, choices=["auto", "wall", "cpu"],
                        help="pass --clock to gatebench run (only when given)")
    parser.add_argument("--processes", type=int, default=None,
                        help="pass --processes N to gatebench run (only when given)")
    parser.add_argument("--reread", action="store_true",
                        help="run nothing: read the runs recorded in --out again and rewrite its ratios")
    parser.add_argument("--burn-seconds", type=float, default=900.0,
                        help="longest time a CPU burner runs (default: %(default)s)")
    parser.add_argument("--checkout", type=Path, default=None,
                        help="run the gatebench of another source tree (e.g. a git worktree of an older commit: "
                             "`git worktree add /tmp/old COMMIT`), with this venv's packages")
    parser.add_argument("--run-timeout", type=float, default=1800.0,
                        help="longest time one gatebench command may take, seconds (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads: expected an int >= 1; got {args.threads}")
    if not args.burn_seconds > 0:
        parser.error(f"--burn-seconds: expected a number of seconds > 0; got {args.burn_seconds}")
    return args


def cli_command(tree: Path = ROOT) -> list[str]:
    """The command line of the source tree ``tree``: ``python -m gatebench`` where it has that package, else
    ``python -m harness.cli`` (the command line's home before it moved)."""
    module = "gatebench" if (tree / "gatebench" / "__main__.py").is_file() else "harness.cli"
    return [sys.executable, "-m", module]


_TREE = ROOT  # the source tree the gatebench commands run from (--checkout)


def _env(tree: Path | None = None) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(tree or _TREE) + (os.pathsep + path if path else "")}


def run_once(cli: list[str], suite: str, path: Path, threads: int | None, timeout: float,
             clock: str | None = None, tree: Path | None = None, processes: int | None = None) -> dict[str, Any]:
    """One ``gatebench run`` into ``path`` from source tree ``tree`` (default: the ``--checkout``): exit code,
    seconds, machine state before and after."""
    tree = tree or _TREE
    command = [*cli, "run", suite, "--out", str(path), "--fresh"]
    for flag, value in (("--threads", threads), ("--clock", clock), ("--processes", processes)):
        if value is not None:
            command += [flag, str(value)]
    before, start = machine_state(), time.monotonic()
    try:
        rc = subprocess.run(command, cwd=tree, env=_env(tree), timeout=timeout, check=False,
                            stdout=subprocess.DEVNULL).returncode
    except subprocess.TimeoutExpired:
        rc = None
    return {"path": str(path), "tree": str(tree), "command": command, "rc": rc,
            "seconds": round(time.monotonic() - start, 1), "state_before": before, "state_after": machine_state()}


def compare_rc(cli: list[str], old: Path, new: Path, timeout: float) -> int | None:
    """Exit code of ``gatebench compare OLD NEW`` (0: nothing slower; None: it timed out)."""
    try:
        return subprocess.run([*cli, "compare", str(old), str(new)], cwd=_TREE, env=_env(), timeout=timeout,
                              check=False, stdout=subprocess.DEVNULL).returncode
    except subprocess.TimeoutExpired:
        return None


@contextlib.contextmanager
def burners(count: int, seconds: float) -> Iterator[list[subprocess.Popen]]:
    """``count`` busy-loop processes, each ending by itself after ``seconds``; all stopped when the block ends."""
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(count):
            procs.append(subprocess.Popen([sys.executable, "-c", _BURNER.format(seconds=float(seconds))]))
        time.sleep(2.0)  # let them reach their loops
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _label(key: tuple[Any, ...], gate: str, impl: str) -> str:
    fields = dict(zip(MATCH_KEYS, key, strict=True))
    shape = f"b={fields['batch']} d={fields['input_dim']} n={fields['experts']} k={fields['k']}"
    return (f"{gate}/{impl} vs {BASELINE}: {fields['framework']} {fields['device']} {fields['mode']} "
            f"{fields['gating']} {shape} {fields['dtype']}")


def _ratio(row: dict[str, Any], base: dict[str, Any]) -> float:
    """The report's ratio of a row to its baseline: the median of the per-round ratios when both rows were timed
    in rounds (``reports.rounds.per_round_ratio``), else the ratio of the medians."""
    if row.get("sample_rounds") and base.get("sample_rounds"):
        return per_round_ratio(row["samples_ms"], row["sample_rounds"], base["samples_ms"],
                               base["sample_rounds"]).ratio
    return row["median_ms"] / base["median_ms"]


def ratios(path: Path) -> dict[str, float]:
    """``{label: ratio of gate to Top-k}`` (``_ratio``) of one results file, fwd and fwdbwd rows with status ok,
    each row paired with its Top-k row by ``reports.comparison.Pairing`` (the report's and compare's pairing)."""
    newest = latest_rows(read_rows(path).rows).values()  # a case timed in several processes: one merged row
    rows = [r for r in newest if r.get("kind") == "timing" and r.get("status") == "ok"
            and r.get("mode") in MODES and isinstance(r.get("median_ms"), (int, float)) and r["median_ms"] > 0]
    pairing = Pairing(rows, (*MATCH_KEYS, "gate", "impl"), {"gate": BASELINE})
    out = {}
    for row in rows:
        base = pairing.baseline_of(row)
        if row.get("gate") != BASELINE and base is not None:
            key = tuple(row.get(k) for k in MATCH_KEYS)
            out[_label(key, row["gate"], row.get("impl"))] = _ratio(row, base)
    return out


def drift(values: Sequence[float | None]) -> float | None:
    """``max / min`` of the values (None when one is missing)."""
    if not values or any(v is None or not v > 0 for v in values):
        return None
    return max(values) / min(values)


def _geomean(values: Sequence[float | None]) -> float | None:
    if any(v is None or not v > 0 for v in values):
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def drift_table(per_run: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Per ratio: its value in every run, quiet and loaded (geometric means) and the four drifts."""
    table = {}
    for name in sorted(set().union(*per_run.values())):
        values = {run: per_run[run].get(name) for run in (*QUIET, *LOADED)}
        quiet, loaded = _geomean([values[r] for r in QUIET]), _geomean([values[r] for r in LOADED])
        table[name] = {
            "runs": values,
            "quiet": quiet,
            "loaded": loaded,
            "drift_quiet": drift([values[r] for r in QUIET]),
            "drift_loaded": drift([values[r] for r in LOADED]),
            "drift_quiet_loaded": drift([quiet, loaded]),
            "drift": drift(list(values.values())),
        }
    return table


def summary(table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """How many drifts exceed ``DRIFT_LIMIT`` (per kind of drift), and the worst drift over all four runs."""
    kinds = ("drift_quiet", "drift_loaded", "drift_quiet_loaded", "drift")
    over = {kind: sum(1 for row in table.values() if (row[kind] or 0) > DRIFT_LIMIT) for kind in kinds}
    known = [(row["drift"], name) for name, row in table.items() if row["drift"] is not None]
    worst = max(known, default=(None, None))
    return {"limit": DRIFT_LIMIT, "ratios": len(table), "over_limit": over,
            "worst": {"ratio": worst[1], "drift": worst[0]}}


def measure(args: argparse.Namespace, cli: list[str]) -> dict[str, dict[str, Any]]:
    """The four runs: two quiet, then two under one burner per usable core."""
    args.work = args.work.resolve()  # the runs may start in another source tree (--checkout)
    args.work.mkdir(parents=True, exist_ok=True)
    runs = {}
    for label in QUIET:
        runs[label] = run_once(cli, args.suite, args.work / f"{label}.jsonl", args.threads, args.run_timeout,
                               args.clock, processes=args.processes)
    with burners(usable_cores(), args.burn_seconds) as procs:
        for label in LOADED:
            runs[label] = run_once(cli, args.suite, args.work / f"{label}.jsonl", args.threads, args.run_timeout,
                                   args.clock, processes=args.processes)
            runs[label]["burners_running_after"] = sum(proc.poll() is None for proc in procs)
    return runs


def _commit(tree: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: Sequence[str] | None = None) -> int:
    global _TREE
    args = parse_args(argv)
    quiet_frameworks()  # inherited by the gatebench runs
    _TREE = (args.checkout or ROOT).resolve()
    cli = cli_command(_TREE)
    started = {"provenance": provenance(), "state": machine_state()}
    if args.reread:  # the runs of an earlier --out, read again (what was measured stays as it was)
        earlier = json.loads(args.out.read_text())
        runs, started = earlier["runs"], earlier["provenance"]
        started.pop("finished", None)
    else:
        runs = measure(args, cli)
    compare = {
        "quiet": compare_rc(cli, Path(runs["quiet1"]["path"]), Path(runs["quiet2"]["path"]), args.run_timeout),
        "loaded": compare_rc(cli, Path(runs["loaded1"]["path"]), Path(runs["loaded2"]["path"]), args.run_timeout),
    }
    table = drift_table({label: ratios(Path(run["path"])) for label, run in runs.items()})
    result = {
        "suite": args.suite, "threads": args.threads, "clock": args.clock, "processes": args.processes,
        "source_tree_commit": _commit(_TREE),
        "burn_seconds": args.burn_seconds,
        "burners": usable_cores(), "cli": cli, "summary": summary(table), "compare_exit_codes": compare,
        "runs": runs, "ratios": table, "provenance": {**started, "finished": machine_state()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    stats = result["summary"]
    print(f"{stats['ratios']} ratios; over {DRIFT_LIMIT}x: {stats['over_limit']}; worst: "
          f"{stats['worst']['drift']} ({stats['worst']['ratio']}); compare exit codes: {compare}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
