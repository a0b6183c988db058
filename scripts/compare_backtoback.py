#!/usr/bin/env python
"""Does ``gatebench compare`` pass unchanged code between back-to-back runs, and fail code that is slower?

Runs ``gatebench run SUITE --fresh`` ``--quiet`` times back to back on a quiet machine, then once more, quiet,
from a copy of this source tree in which every PyTorch softmax gate's forward busy-waits until it has taken 1.5x
its own time (a planted 1.5x regression of real code, measured through the whole harness), then ``--loaded`` times
under one busy process per usable core (``scripts.noise_drift.burners``). Then ``reports.compare.compare_paths``
(what ``gatebench compare`` runs), each pair three ways (``MODES``): relative to each group's Top-k (the
default), absolute times raw (``--absolute``) and absolute times speed-corrected (``--absolute --speed-correction``):

- every consecutive pair of quiet runs, and of loaded runs (unchanged code: any regression is false);
- the last quiet run against the first loaded one (unchanged code on a machine that became busy);
- the last quiet run against the planted run: the PyTorch softmax ``fwd`` cases must be flagged, and nothing else
  should be (``fwdbwd`` and ``bwd`` cases of softmax are slowed less, by the forward's share).

Writes JSON (``--out``): per comparison its exit code, the regressions' case ids, the median machine speed
(NEW's probe over OLD's) and every case's ratio, by mode; the runs' machine state; provenance.
``--compare-only`` runs nothing and compares the runs already in ``--work``.

    .venv/bin/python -m scripts.compare_backtoback --out docs/results/compare_backtoback/summary.json \
        [--suite suites/smoke.toml] [--quiet 3] [--loaded 2] [--work results/compare_backtoback] [--clock wall]
        [--processes 4]
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.machine import usable_cores
from scripts import noise_drift
from scripts._common import parser as make_parser
from scripts._common import quiet_frameworks, write_json

ROOT = Path(__file__).resolve().parent.parent
# Appended to gates/torch.py of the planted copy: softmax gates' forward takes 1.5x its own time.
PLANTED = '''

import time as _planted_time

_planted_forward = Gate.forward


def _slower_forward(self, *args, **kwargs):  # a planted 1.5x regression (scripts/compare_backtoback.py)
    start = _planted_time.perf_counter()
    out = _planted_forward(self, *args, **kwargs)
    if self.config.name == "softmax":
        spent = _planted_time.perf_counter() - start
        while _planted_time.perf_counter() - start < 1.5 * spent:
            pass
    return out


Gate.forward = _slower_forward
'''
PLANTED_CASES = {"gate": "softmax", "framework": "torch", "mode": "fwd"}
_IGNORE = shutil.ignore_patterns(".venv", ".git", "results", "docs", ".asv", "__pycache__", ".hypothesis",
                                 ".pytest_cache", ".benchmarks")


def run_once(tree: Path, suite: str, path: Path, timeout: float, clock: str | None = None,
             processes: int | None = None) -> dict[str, Any]:
    """One ``gatebench run SUITE --out PATH --fresh [--clock CLOCK] [--processes N]`` from source tree ``tree``
    (``scripts.noise_drift.run_once``)."""
    return noise_drift.run_once(noise_drift.cli_command(tree), suite, path, None, timeout, clock, tree=tree,
                                processes=processes)


def planted_tree(into: Path) -> Path:
    """A copy of this source tree (code and suites) with ``PLANTED`` appended to ``gates/torch.py``."""
    tree = into / "planted"
    shutil.copytree(ROOT, tree, ignore=_IGNORE)
    with open(tree / "gates" / "torch.py", "a", encoding="utf-8") as handle:
        handle.write(PLANTED)
    return tree


def _is_planted(case_id: str) -> bool:
    parts = dict(part.split("=", 1) for part in case_id.split(","))
    return all(parts.get(key) == value for key, value in PLANTED_CASES.items())


# How each pair is compared: gatebench compare's default (each case relative to its group's Top-k), and absolute
# times raw (--absolute) and speed-corrected (--absolute --speed-correction).
MODES: dict[str, dict[str, Any]] = {"relative": {}, "absolute": {"reference": None},
                                    "corrected": {"reference": None, "speed": True}}


def compare(old: Path, new: Path, **how: Any) -> dict[str, Any]:
    from reports.compare import compare_paths

    result, _ = compare_paths([str(old)], [str(new)], **how)
    table = result.table
    judged = table[table["ratio"].notna()]
    return {
        "exit_code": result.exit_code(), "regressions": sorted(str(c) for c in result.regressions["case_id"]),
        "not_judged": int((table["mark"] == "~").sum()), "cases": int(len(judged)),
        "machine_speed": result.probe_ratio if result.probe_ratio == result.probe_ratio else None,
        "ratios": {str(r["case_id"]): {"ratio": float(r["ratio"]), "raw": float(r["raw_ratio"])}
                   for _, r in judged.iterrows()},
    }


def pairs(runs: dict[str, dict[str, Any]], quiet: int, loaded: int) -> list[tuple[str, str, str]]:
    """``(what, old, new)`` for every comparison of the module docstring."""
    q = [f"quiet{i + 1}" for i in range(quiet)]
    l_ = [f"loaded{i + 1}" for i in range(loaded)]
    out = [("unchanged, quiet", a, b) for a, b in zip(q, q[1:], strict=False)]
    out += [("unchanged, loaded", a, b) for a, b in zip(l_, l_[1:], strict=False)]
    if q and l_:
        out.append(("unchanged, quiet then loaded", q[-1], l_[0]))
    if q:
        out.append(("planted 1.5x softmax forward", q[-1], "planted"))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser(__doc__)
    p.add_argument("--suite", default=str(ROOT / "suites/smoke.toml"))
    p.add_argument("--quiet", type=int, default=3)
    p.add_argument("--loaded", type=int, default=2)
    p.add_argument("--work", type=Path, default=ROOT / "results/compare_backtoback")
    p.add_argument("--run-timeout", type=float, default=1800.0)
    p.add_argument("--clock", default=None, choices=["auto", "wall", "cpu"], help="pass --clock to gatebench run")
    p.add_argument("--processes", type=int, default=None, help="pass --processes to gatebench run")
    p.add_argument("--compare-only", action="store_true",
                   help="run nothing: compare the runs already in --work (what an earlier --out recorded of them "
                        "is kept)")
    args = p.parse_args(argv)
    if args.quiet < 1 or args.loaded < 0:
        p.error("--quiet: expected >= 1 and --loaded >= 0")
    quiet_frameworks()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    runs = (_existing(work, args.quiet, args.loaded, args.out) if args.compare_only else _run_all(args, work))
    comparisons = []
    for what, old, new in pairs(runs, args.quiet, args.loaded):
        entry: dict[str, Any] = {"what": what, "old": old, "new": new}
        for mode, how in MODES.items():
            entry[mode] = compare(Path(runs[old]["path"]), Path(runs[new]["path"]), **how)
        if new == "planted":
            for mode in MODES:
                flagged = entry[mode]["regressions"]
                entry[mode]["planted_flagged"] = sum(_is_planted(c) for c in flagged)
                entry[mode]["others_flagged"] = sum(not _is_planted(c) for c in flagged)
            entry["planted_cases"] = sum(_is_planted(c) for c in entry["absolute"]["ratios"])
        comparisons.append(entry)
        print(f"{what:30s} {old:>8s} -> {new:<8s} " + " | ".join(
            f"{mode}: exit {entry[mode]['exit_code']}, {len(entry[mode]['regressions'])} slower" for mode in MODES)
            + f" | machine {entry['absolute']['machine_speed'] or float('nan'):.2f}x")
    out = write_json(args.out, {"suite": args.suite, "clock": args.clock, "processes": args.processes,
                                "planted": PLANTED_CASES, "runs": runs, "comparisons": comparisons})
    print(f"wrote {out}")
    return 0


def _existing(work: Path, quiet: int, loaded: int, previous: Path | None = None) -> dict[str, dict[str, Any]]:
    """The runs already in ``work``, with what an earlier summary at ``previous`` recorded of them (seconds,
    machine state)."""
    names = [f"quiet{i + 1}" for i in range(quiet)] + [f"loaded{i + 1}" for i in range(loaded)] + ["planted"]
    missing = [name for name in names if not (work / f"{name}.jsonl").exists()]
    if missing:
        raise SystemExit(f"--compare-only: expected {', '.join(missing)}.jsonl in {work}")
    known: dict[str, Any] = {}
    if previous is not None and previous.exists():
        known = json.loads(previous.read_text()).get("runs", {})
    return {name: {**known.get(name, {}), "path": str(work / f"{name}.jsonl")} for name in names}


def _run_all(args: Any, work: Path) -> dict[str, dict[str, Any]]:
    """The quiet runs, the planted run (still quiet: right after them, before any burner has raised the load
    average, which would flag its rows noisy), then the loaded runs."""
    runs: dict[str, dict[str, Any]] = {}
    for i in range(args.quiet):
        runs[f"quiet{i + 1}"] = run_once(ROOT, args.suite, work / f"quiet{i + 1}.jsonl", args.run_timeout,
                                         args.clock, args.processes)
    with tempfile.TemporaryDirectory() as tmp:
        runs["planted"] = run_once(planted_tree(Path(tmp)), args.suite, work / "planted.jsonl", args.run_timeout,
                                   args.clock, args.processes)
    if args.loaded:
        with noise_drift.burners(usable_cores(), 60.0 * 30) as procs:
            for i in range(args.loaded):
                label = f"loaded{i + 1}"
                runs[label] = run_once(ROOT, args.suite, work / f"{label}.jsonl", args.run_timeout, args.clock,
                                       args.processes)
                runs[label]["burners_running_after"] = sum(proc.poll() is None for proc in procs)
    return runs

if __name__ == "__main__":
    sys.exit(main())
