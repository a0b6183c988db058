"""``python -m harness.prediction SUITE --out DIR [--resume] [--json FILE]``: run a prediction suite's studies
(one per framework and gating), rows into ``DIR/<study>.jsonl``, and print each study's table."""

from __future__ import annotations

import argparse
import json
import sys
import time

from .report import table
from .study import run_study, write_json
from .suite import load_prediction_suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.prediction", description=__doc__)
    parser.add_argument("suite")
    parser.add_argument("--out", required=True, help="folder of the rows (one JSONL file per study)")
    parser.add_argument("--resume", action="store_true", help="reuse the runs already in the files")
    parser.add_argument("--json", help="write every study's verdict to this JSON file")
    parser.add_argument("--framework", action="append", help="only the studies of this framework (repeatable)")
    args = parser.parse_args(argv)
    try:
        name, studies = load_prediction_suite(args.suite)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    studies = [s for s in studies if not args.framework or s.framework in args.framework]
    start, results = time.perf_counter(), []
    def progress(row: dict, done: int, total: int) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {done}/{total} {row['gate']} {row['framework']} "
              f"{row['split']} seed {row['seed']}: {row['status']} acc {row.get('acc_mean')}", file=sys.stderr)

    for study in studies:
        result = run_study(study, args.out, resume=args.resume, on_row=progress)
        results.append(result)
        print(table(result))
    suite = {"suite": name, "wall_s": time.perf_counter() - start, "studies": results}
    if args.json:
        write_json(suite, args.json)
    else:
        print(json.dumps({"suite": name, "wall_s": suite["wall_s"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
