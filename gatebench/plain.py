"""``gatebench run`` without typer or rich (``python -m gatebench run`` on a machine that has neither): the same
flags, one line per row as it is written, a count at the end; exit 1 if a case is still failed, 2 on a bad
argument or a results file that cannot be written, 130 when interrupted (the rows so far are kept)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.env import quiet_frameworks
from harness.suite import FILTER_KEYS

FRAMEWORK_LABELS = {"torch": "PyTorch", "tf": "TensorFlow"}


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
    parser.add_argument("--dry-run", action="store_true", help="List the cases the filters select; run nothing.")
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


def contradictions(**flags: Any) -> str | None:
    """The first contradiction among a run's flags (``resume``, ``fresh``, ``retry_skipped``), as an error line,
    or None."""
    if flags.get("resume") and flags.get("fresh"):
        return ("--fresh: expected either --resume (continue the results file) or --fresh (move it aside and start "
                "over); got both")
    if flags.get("retry_skipped") and not flags.get("resume"):
        return "--retry-skipped: expected --resume with it (it reruns the skipped cases of a resumed run); got none"
    return None


class Announcer:
    """Writes ``loading PyTorch ...`` / ``loading TensorFlow ...`` once per framework, before its first case (the
    first case of a framework spends seconds importing it)."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self.seen: set[str] = set()

    def __call__(self, framework: str | None) -> None:
        if framework in FRAMEWORK_LABELS and framework not in self.seen:
            self.seen.add(framework)
            self.write(f"loading {FRAMEWORK_LABELS[framework]} ...")


class AnnouncingExecutor:
    """An executor that announces each framework (``Announcer``) as the first task of it is handed to ``inner``."""

    def __init__(self, inner: Any, announce: Announcer) -> None:
        self.inner, self.announce = inner, announce

    def map(self, tasks: Iterable[Any]) -> Iterator[tuple[Any, dict[str, Any]]]:
        return self.inner.map(self._announced(tasks))

    def __getattr__(self, name: str) -> Any:  # the inner executor's other methods (continue_run)
        return getattr(self.inner, name)

    def _announced(self, items: Iterable[Any]) -> Iterator[Any]:
        for item in items:
            for task in getattr(item, "tasks", (item,)):
                self.announce(getattr(task, "params", {}).get("framework"))
            yield item


def check_gpu(selected: Sequence[Mapping[str, Any]], filters: Mapping[str, Sequence[Any] | None],
              announce: Announcer) -> None:
    """``--device gpu`` without a GPU fails before anything runs: each framework of the selected GPU cases is
    loaded (announced) and asked for its GPU; ValueError with the framework's reason. Only when the filters ask
    for a GPU (a suite's own GPU cases are skipped rows where there is none)."""
    from harness import cases
    from harness.suite import filter_values

    if "gpu" not in filter_values("device", filters.get("device") or ()):
        return
    from harness.adapters import Unavailable, get_adapter

    frameworks = dict.fromkeys(row["framework"] for row in selected
                               if "device" in row and cases.normalize_device(row["device"]) == "gpu")
    for framework in frameworks:
        announce(framework)
        try:
            get_adapter(framework).check_device("gpu")
        except (Unavailable, ImportError) as exc:
            raise ValueError(f"--device gpu: expected a GPU {FRAMEWORK_LABELS.get(framework, framework)} can use; "
                             f"got none here ({exc})") from None


def selection(suite: Any, filters: Mapping[str, Sequence[Any] | None], announce: Announcer
              ) -> list[Mapping[str, Any]]:
    """The cases a run selects, checked before anything runs (``harness.suite.select_cases``, ``check_gpu``)."""
    from harness.suite import select_cases

    selected = select_cases(suite, filters)
    check_gpu(selected, filters, announce)
    return selected


def case_columns(selected: Sequence[Mapping[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """The columns of a dry run's table: those whose value differs between the selected cases (gate and framework
    always), and the values all of them share."""
    keys = list(dict.fromkeys(key for row in selected for key in row))
    varying = [key for key in keys if key in ("gate", "framework")
               or len({repr(row.get(key)) for row in selected}) > 1]
    shared = {key: selected[0].get(key) for key in keys if key not in varying}
    return varying, shared


def dry_run_lines(suite: Any, selected: Sequence[Mapping[str, Any]]) -> list[str]:
    """A dry run as plain lines: the count, what the cases share, one line per case."""
    varying, shared = case_columns(selected)
    lines = [f"{suite.name}: {len(selected)} of {len(suite.cases)} case(s) selected; nothing run, nothing written"]
    if shared:
        lines.append("all: " + ", ".join(f"{key}={value}" for key, value in shared.items()))
    lines += [" ".join(f"{key}={row.get(key)}" for key in varying) for row in selected]
    return lines


def recovery_label(params: Mapping[str, Any]) -> str:
    """A recovery case in a few words: ``gate / framework / problem / seed N``."""
    return " / ".join([str(params.get("gate", "?")), str(params.get("framework", "?")),
                       str(params.get("problem", "?")), f"seed {params.get('seed', '?')}"])


def version() -> str:
    """The installed package's version, else the source tree's ``pyproject.toml`` version."""
    from importlib import metadata

    try:
        return metadata.version("gatebench")
    except metadata.PackageNotFoundError:
        pass
    import tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]) + " (source tree)"
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def _line(row: dict[str, Any]) -> str:
    median, iqr = row.get("median_ms"), row.get("iqr_ms")
    timing = f"median {median:.4f} ms" + (f" iqr {iqr:.4f} ms" if iqr is not None else "") if median is not None \
        else ""
    return f"[{row['status']}] {row['case_id']} {timing} {row.get('error') or ''}".rstrip()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:
        print(f"gatebench {version()}")
        return 0
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
    announce = Announcer(lambda line: print(line, file=sys.stderr, flush=True))
    suite = None
    try:
        problem = contradictions(resume=args.resume, fresh=args.fresh, retry_skipped=args.retry_skipped)
        if problem:
            raise ValueError(problem)
        try:
            suite = load_suite(args.suite, yes=args.yes)
        except ValueError as exc:
            raise ValueError(f"suite error: {exc}") from None
        if len(suite.cases) > WARN_CASES:
            print(f"warning: {suite.name} has {len(suite.cases):,} cases (over {WARN_CASES:,})", file=sys.stderr)
        executor = make_executor(args.isolate, args.case_timeout, suite.settings)
        selected = selection(suite, filters, announce)
        if args.dry_run:
            print("\n".join(dry_run_lines(suite, selected)))
            return 0
        summary = run_suite(suite, args.out, resume=args.resume, fresh=args.fresh, retry_skipped=args.retry_skipped,
                            executor=AnnouncingExecutor(executor, announce), filters=filters,
                            on_row=lambda row: print(_line(row), flush=True))
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
