"""``gatebench run`` without typer or rich (``python -m gatebench run`` on a machine that has neither): the same
flags, one line per row as it is written, a count at the end; exit 1 if a case is still failed, 2 on a bad
argument or a results file that cannot be written, 130 when interrupted (the rows so far are kept)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from harness.env import quiet_frameworks
from harness.suite import FILTER_KEYS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gatebench run", description=__doc__.split("\n")[0])
    parser.add_argument("suite", help="A suite TOML file, or the name of one in suites/.")
    parser.add_argument("--out", default="results", help="Results folder (OUT/<suite>.jsonl) or a .jsonl path.")
    parser.add_argument("--resume", action="store_true",
                        help="Skip the cases done in the results file (newest row ok or skipped).")
    parser.add_argument("--retry-skipped", action="store_true", help="With --resume: rerun skipped cases too.")
    parser.add_argument("--fresh", action="store_true", help="Move an existing results file aside, start over.")
    parser.add_argument("--isolate", action="store_true", help="Run each case in its own subprocess.")
    parser.add_argument("--case-timeout", type=float, default=None,
                        help="With --isolate: kill a case's subprocess after this many seconds.")
    parser.add_argument("--yes", action="store_true", help="Run a suite of more than 100,000 cases.")
    for key in FILTER_KEYS:
        parser.add_argument(f"--{key}", action="append", help=f"Only cases with this {key} (repeat for several).")
    return parser


def resume_command(suite: str, out: Any, options: Mapping[str, Any]) -> str:
    """The ``gatebench run`` command line that continues an interrupted run (its options, ``--resume``)."""
    words = ["gatebench", "run", str(suite), "--out", str(out)]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                words += [flag, str(item)]
        elif value not in (None, False):
            words += [flag, str(value)]
    return shlex.join([*words, "--resume"])


def interrupted_line(path: os.PathLike[str] | str, suite: str, out: Any, options: Mapping[str, Any]) -> str:
    """What an interrupted run says: the rows kept, in which file, and how to continue."""
    from harness.results import read_rows

    kept = len(read_rows(path).rows) if os.path.exists(path) else 0
    return f"interrupted: {kept} rows kept in {path}; continue with: {resume_command(suite, out, options)}"


def _line(row: dict[str, Any]) -> str:
    median, iqr = row.get("median_ms"), row.get("iqr_ms")
    timing = f"median {median:.4f} ms" + (f" iqr {iqr:.4f} ms" if iqr is not None else "") if median is not None \
        else ""
    return f"[{row['status']}] {row['case_id']} {timing} {row.get('error') or ''}".rstrip()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "run":
        print("python -m gatebench: without typer and rich only `run` is available "
              "(pip install 'gatebench[cli]' for every command)", file=sys.stderr)
        return 2
    args = _parser().parse_args(argv[1:])
    quiet_frameworks()
    from harness.executors import make_executor
    from harness.runner import results_path, run_suite
    from harness.suite import WARN_CASES, load_suite

    filters = {key: getattr(args, key) for key in FILTER_KEYS}
    options = {"isolate": args.isolate, "case_timeout": args.case_timeout, "retry_skipped": args.retry_skipped,
               "yes": args.yes, **filters}
    suite = None
    try:
        suite = load_suite(args.suite, yes=args.yes)
        if len(suite.cases) > WARN_CASES:
            print(f"warning: {suite.name} has {len(suite.cases):,} cases (over {WARN_CASES:,})", file=sys.stderr)
        executor = make_executor(args.isolate, args.case_timeout, suite.settings)
        summary = run_suite(suite, args.out, resume=args.resume, fresh=args.fresh, retry_skipped=args.retry_skipped,
                            executor=executor, filters=filters, on_row=lambda row: print(_line(row), flush=True))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if suite is not None:
            print(interrupted_line(results_path(suite, args.out), args.suite, args.out, options), file=sys.stderr)
        return 130
    print(f"{summary.path}: {len(summary.rows)} run ({summary.count('ok')} ok, {summary.count('failed')} failed, "
          f"{summary.count('skipped')} skipped), {summary.resumed} already done, {summary.still_failed} still failed",
          flush=True)
    return 1 if summary.still_failed else 0
