"""``gatebench run`` without typer or rich (``python -m gatebench run`` on a machine that has neither): the same
flags, one line per row as it is written, a count at the end; exit 1 if a case failed, 2 on a bad argument."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from harness.env import quiet_frameworks
from harness.suite import FILTER_KEYS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gatebench run", description=__doc__.split("\n")[0])
    parser.add_argument("suite", help="A suite TOML file, or the name of one in suites/.")
    parser.add_argument("--out", default="results", help="Results folder (OUT/<suite>.jsonl) or a .jsonl path.")
    parser.add_argument("--resume", action="store_true", help="Skip the cases already in the results file.")
    parser.add_argument("--fresh", action="store_true", help="Move an existing results file aside, start over.")
    parser.add_argument("--isolate", action="store_true", help="Run each case in its own subprocess.")
    for key in FILTER_KEYS:
        parser.add_argument(f"--{key}", action="append", help=f"Only cases with this {key} (repeat for several).")
    return parser


def _line(row: dict[str, Any]) -> str:
    median = row.get("median_ms")
    timing = f"median {median:.4f} ms iqr {row['iqr_ms']:.4f} ms" if median is not None else ""
    return f"[{row['status']}] {row['case_id']} {timing} {row.get('error') or ''}".rstrip()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "run":
        print("python -m gatebench: without typer and rich only `run` is available "
              "(pip install 'gatebench[cli]' for every command)", file=sys.stderr)
        return 2
    args = _parser().parse_args(argv[1:])
    quiet_frameworks()
    from harness.executors import InProcessExecutor, SubprocessExecutor
    from harness.runner import run_suite

    executor = SubprocessExecutor() if args.isolate else InProcessExecutor()
    filters = {key: getattr(args, key) for key in FILTER_KEYS}
    try:
        summary = run_suite(args.suite, args.out, resume=args.resume, fresh=args.fresh, executor=executor,
                            filters=filters, on_row=lambda row: print(_line(row), flush=True))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{summary.path}: {len(summary.rows)} run ({summary.count('ok')} ok, {summary.count('failed')} failed, "
          f"{summary.count('skipped')} skipped), {summary.resumed} already done", flush=True)
    return 1 if summary.count("failed") else 0
