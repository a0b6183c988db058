"""Results that cannot be lost, mixed or misread: the lock on a results file, resume of failed and skipped cases,
unusable rows reported and left out, failed writes, output paths, suite checks, interrupts, ``recover --quick``.

No framework is imported: the cases run through fake executors that make their rows with ``make_row``.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import results as results_module
from harness.results import (
    ResultsError,
    ResultsLocked,
    ResultsWriter,
    completed_case_ids,
    lock_path,
    make_row,
    read_rows,
)
from harness.runner import run_suite
from harness.suite import count_cases, load_suite
from harness.tasks import TaskGroup

ROOT = Path(__file__).resolve().parent.parent
GRID = {"gate": ["softmax", "topk", "dselect_k"], "framework": "torch", "mode": "fwd", "gating": "static",
        "shapes": [{"batch": 4, "input_dim": 4, "experts": 4, "k": 2}]}
SUITE = {"name": "safe", "settings": {"rounds": 1}, "grid": [GRID]}
SUITE_TOML = """name = "safe"
[settings]
rounds = 1
[[grid]]
gate = ["softmax", "topk", "dselect_k"]
framework = "torch"
mode = "fwd"
gating = "static"
shapes = [{batch = 4, input_dim = 4, experts = 4, k = 2}]
"""


class FakeExecutor:
    """Rows without running anything: ``status`` by gate (default ok); ``sleep`` seconds before each row;
    ``interrupt_after``: raise KeyboardInterrupt after that many rows."""

    def __init__(self, status: dict[str, str] | None = None, sleep: float = 0.0, interrupt_after: int | None = None):
        self.status, self.sleep, self.interrupt_after = status or {}, sleep, interrupt_after
        self.ran: list[str] = []

    def map(self, items):
        for item in items:
            for task in (item.tasks if isinstance(item, TaskGroup) else (item,)):
                if self.interrupt_after is not None and len(self.ran) >= self.interrupt_after:
                    raise KeyboardInterrupt
                time.sleep(self.sleep)
                self.ran.append(task.case_id)
                status = self.status.get(task.params["gate"], "ok")
                error = None if status == "ok" else f"synthetic {status}"
                yield task, make_row(task.kind, task.suite, task.params, status, error=error,
                                     median_ms=1.0 if status == "ok" else None,
                                     iqr_ms=0.1 if status == "ok" else None)


def _suite_file(tmp_path: Path, text: str = SUITE_TOML) -> Path:
    path = tmp_path / "safe.toml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------------------------
# The lock.
# ---------------------------------------------------------------------------------------------------------------
_SLOW_RUN = """
import sys, time
sys.path.insert(0, sys.argv[3])
from tests.test_results_safety import FakeExecutor, SUITE
from harness.runner import run_suite
run_suite(SUITE, sys.argv[1], resume=True, executor=FakeExecutor(sleep=float(sys.argv[2])))
"""


def test_a_second_run_on_a_locked_file_fails_at_once_naming_the_holder(tmp_path):
    """Two real processes: while one runs, a second --resume or --fresh on the same file fails at once, naming
    the first one's pid, and neither writes a row nor moves the file; every case ends in the file once."""
    out = tmp_path / "safe.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-c", _SLOW_RUN, str(out), "0.7", str(ROOT)], env=env,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and out.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first.poll() is None, first.stderr.read()
        for fresh in (False, True):
            start = time.monotonic()
            with pytest.raises(ResultsLocked, match=f"pid {first.pid}"):
                run_suite(SUITE, out, resume=not fresh, fresh=fresh, executor=FakeExecutor())
            assert time.monotonic() - start < 2
        assert not list(tmp_path.glob("*.bak"))
        from gatebench.plain import main

        assert main(["run", str(_suite_file(tmp_path)), "--out", str(out), "--resume"]) == 2
    finally:
        assert first.wait(timeout=60) == 0, first.stderr.read()
    ids = [row["case_id"] for row in read_rows(out).rows]
    assert len(ids) == 3 and len(set(ids)) == 3
    assert lock_path(out).exists()  # released, left in place; the next run takes it
    assert run_suite(SUITE, out, resume=True, executor=FakeExecutor()).resumed == 3


def test_the_lock_is_released_at_the_end_and_one_descriptor_writes_every_row(tmp_path, monkeypatch):
    out = tmp_path / "safe.jsonl"
    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(results_module.os, "open", lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k))
    run_suite(SUITE, out, executor=FakeExecutor())
    assert [p for p in opened if p.startswith(str(tmp_path))] == [str(out)]
    with ResultsWriter(out) as writer:  # not locked any more
        writer.write(make_row("timing", "safe", {"gate": "x", "framework": "torch"}, "skipped"))
    with ResultsWriter(out), pytest.raises(ResultsLocked, match=f"pid {os.getpid()}"):
        ResultsWriter(out)


def test_two_fresh_runs_in_one_second_keep_both_backups(tmp_path):
    out = tmp_path / "safe.jsonl"
    for _ in range(3):
        run_suite(SUITE, out, fresh=True, executor=FakeExecutor())
    backups = sorted(tmp_path.glob("safe.jsonl.*.bak"))
    assert len(backups) == 2 and all(len(read_rows(b).rows) == 3 for b in backups)


# ---------------------------------------------------------------------------------------------------------------
# Resume.
# ---------------------------------------------------------------------------------------------------------------
def test_resume_reruns_failed_cases_and_retry_skipped_reruns_skipped(tmp_path):
    out = tmp_path / "safe.jsonl"
    first = run_suite(SUITE, out, executor=FakeExecutor({"topk": "failed", "dselect_k": "skipped"}))
    assert first.still_failed == 1
    again = FakeExecutor({"topk": "failed"})
    second = run_suite(SUITE, out, resume=True, executor=again)
    assert [cid.split("gate=")[1].split(",")[0] for cid in again.ran] == ["topk"] and second.still_failed == 1
    third = run_suite(SUITE, out, resume=True, executor=FakeExecutor())
    assert third.resumed == 2 and third.still_failed == 0
    retried = FakeExecutor()
    run_suite(SUITE, out, resume=True, retry_skipped=True, executor=retried)
    assert len(retried.ran) == 1 and "dselect_k" in retried.ran[0]
    assert len(completed_case_ids(out)) == 3

    from reports.load import load_results

    frame = load_results(out).frame
    assert len(frame) == 3 and set(frame["status"]) == {"ok"}  # the newest row of each case
    assert frame.loc[frame["gate"] == "topk", "line"].iloc[0] == 5


def test_plain_run_exits_1_while_a_case_is_still_failed_and_0_once_resumed(tmp_path, monkeypatch, capsys):
    from gatebench import plain
    from harness import executors

    suite, out = _suite_file(tmp_path), tmp_path / "out"
    monkeypatch.setattr(executors, "make_executor", lambda *a, **k: FakeExecutor({"softmax": "failed"}))
    assert plain.main(["run", str(suite), "--out", str(out)]) == 1
    monkeypatch.setattr(executors, "make_executor", lambda *a, **k: FakeExecutor())
    assert plain.main(["run", str(suite), "--out", str(out), "--resume"]) == 0
    assert "1 run (1 ok, 0 failed, 0 skipped), 2 already done, 0 still failed" in capsys.readouterr().out


def test_rows_without_status_or_gate_do_not_count_as_done(tmp_path):
    out = tmp_path / "r.jsonl"
    good = make_row("timing", "safe", {"gate": "topk", "framework": "torch"}, "ok")
    lines = [{k: v for k, v in good.items() if k != "status"}, {**good, "gate": None, "case_id": "other"}]
    out.write_text("".join(json.dumps(row) + "\n" for row in lines))
    assert completed_case_ids(out) == set()


# ---------------------------------------------------------------------------------------------------------------
# Unusable rows: reported as path:line, left out of report, compare and resume alike.
# ---------------------------------------------------------------------------------------------------------------
def _bad_rows_file(path: Path) -> Path:
    base = make_row("timing", "safe", {"gate": "topk", "framework": "torch"}, "ok", median_ms=1.0,
                    samples_ms=[1.0, 1.1], n_samples=2)
    rows = [
        base,
        {**base, "case_id": "a", "samples_ms": [1.0, "slow"]},
        {**base, "case_id": "b", "median_ms": -1.0},
        {**base, "case_id": "c", "status": "great"},
        {k: v for k, v in {**base, "case_id": "d"}.items() if k != "status"},
        {**base, "case_id": "e", "schema": 2},
        {**base, "case_id": "f", "sample_rounds": [0]},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_bad_values_schema_2_and_missing_status_are_reported_by_line_and_left_out(tmp_path):
    path = _bad_rows_file(tmp_path / "bad.jsonl")
    got = read_rows(path)
    assert [row["case_id"] for row in got.rows] == ["framework=torch,gate=topk"] and got.lines == [1]
    want = [(2, "'samples_ms': expected a list of numbers >= 0; got 'slow'"),
            (3, "'median_ms': expected a number >= 0"),
            (4, "'status': expected one of ok, failed, skipped; got 'great'"),
            (5, "timing row without status"),
            (6, "a schema 2 row; this gatebench reads schema 1"),
            (7, "samples_ms has 2 entries and sample_rounds 1")]
    assert len(got.problems) == len(want)
    for problem, (line, what) in zip(got.problems, want, strict=True):
        assert problem.startswith(f"{path}:{line}: ") and what in problem, problem

    from reports.load import load_results

    loaded = load_results(path)
    assert len(loaded.frame) == 1 and len(loaded.problems) == len(want)
    assert completed_case_ids(path) == {"framework=torch,gate=topk"}


def test_report_and_compare_name_the_bad_line_and_go_on(tmp_path):
    pytest.importorskip("scipy")
    from reports.compare import compare_paths

    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps(make_row("timing", "safe", {"gate": "topk", "framework": "torch"}, "ok",
                                       median_ms=1.0, samples_ms=[1.0, 1.0, 1.1], n_samples=3)) + "\n")
    new = _bad_rows_file(tmp_path / "new.jsonl")
    _, problems = compare_paths([str(old)], [str(new)])
    assert any(p.startswith(f"NEW {new}:2: ") and "samples_ms" in p for p in problems)


# ---------------------------------------------------------------------------------------------------------------
# Failed writes and output paths.
# ---------------------------------------------------------------------------------------------------------------
def test_disk_full_is_one_clear_error_and_the_rows_before_stay_whole(tmp_path, monkeypatch):
    out = tmp_path / "safe.jsonl"
    real = results_module._write_all
    calls = []

    def half_then_full(fd, data):
        calls.append(1)
        if len(calls) == 2:
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(results_module, "_write_all", half_then_full)
    with pytest.raises(ResultsError, match="No space left on device; the 1 row.s. written before it are intact"):
        run_suite(SUITE, out, executor=FakeExecutor())
    text = out.read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 1 and not read_rows(out).problems
    from gatebench import plain

    monkeypatch.setattr(results_module, "_write_all", real)
    assert plain.main(["run", str(_suite_file(tmp_path)), "--out", str(out), "--resume"]) in (0, 1)
    assert len(read_rows(out).rows) == 3


@pytest.mark.parametrize("make_out, match", [
    (lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt" / "sub", "is a file, so"),
    (lambda tmp: (tmp / "x.jsonl").mkdir() or tmp / "x.jsonl", "is a folder, not a results file"),
])
def test_bad_output_paths_are_found_before_the_first_case(tmp_path, make_out, match):
    out = make_out(tmp_path)
    executor = FakeExecutor()
    with pytest.raises(ResultsError, match=match):
        run_suite(SUITE, out, executor=executor)
    assert executor.ran == []


def test_a_read_only_out_is_found_before_the_first_case(tmp_path, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: make the permission check see a read-only folder
        monkeypatch.setattr(results_module.os, "access", lambda path, mode: Path(path) != out)
    else:
        out.chmod(0o555)
    executor = FakeExecutor()
    try:
        with pytest.raises(ResultsError, match="permission denied"):
            run_suite(SUITE, out, executor=executor)
    finally:
        out.chmod(0o755)
    assert executor.ran == []


# ---------------------------------------------------------------------------------------------------------------
# Suites.
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, match", [
    ({"name": "../../x"}, "name: expected a plain file name"),
    ({"name": "a/b"}, "name: expected a plain file name"),
    ({"nmae": "typo"}, r"suite: unknown keys \['nmae'\]"),
    ({"settings": {"rep_ms": 0}}, "settings.rep_ms: expected a finite number > 0"),
    ({"settings": {"case_timeout_s": 0}}, "settings.case_timeout_s: expected a finite number > 0"),
    ({"settings": {"check": "true"}}, "settings.check: expected true or false; got 'true'"),
    ({"description": 3}, "description: expected a string"),
])
def test_suite_gaps_are_value_errors(change, match):
    with pytest.raises(ValueError, match=match):
        load_suite({**SUITE, **change})


def test_huge_grids_are_counted_before_expanding_and_need_yes():
    big = {**GRID, "gate": ["softmax"] * 10, "mode": ["fwd"] * 10, "shapes": None,
           "batch": list(range(1, 101)), "input_dim": list(range(1, 101)), "experts": [4], "k": [2]}
    del big["shapes"]
    assert count_cases([big]) == 1_000_000
    start = time.monotonic()
    with pytest.raises(ValueError, match="about 1,000,000 cases .over 100,000.*pass --yes"):
        load_suite({**SUITE, "grid": [big]})
    assert time.monotonic() - start < 1
    assert load_suite({**SUITE, "settings": {"case_timeout_s": 2}}).settings.case_timeout_s == 2.0


def test_the_command_line_warns_above_ten_thousand_cases(tmp_path, monkeypatch, capsys):
    from gatebench import plain
    from harness import executors

    suite = _suite_file(tmp_path, SUITE_TOML.replace('gating = "static"\nshapes = [{batch = 4, input_dim = 4, '
                                                     'experts = 4, k = 2}]',
                                                     'batch = 4\ninput_dim = 4\nk = 2\n'
                                                     f'experts = {list(range(2, 3502))}'))
    monkeypatch.setattr(executors, "make_executor", lambda *a, **k: FakeExecutor(interrupt_after=0))
    assert plain.main(["run", str(suite), "--out", str(tmp_path / "out")]) == 130
    assert "warning: safe has 10,500 cases (over 10,000)" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# Interrupts.
# ---------------------------------------------------------------------------------------------------------------
def test_sigint_says_how_many_rows_are_kept_and_how_to_continue(tmp_path, monkeypatch, capsys):
    from typer.testing import CliRunner

    from gatebench import plain
    from gatebench.cli import app
    from harness import executors

    suite, out = _suite_file(tmp_path), tmp_path / "out"
    monkeypatch.setattr(executors, "make_executor", lambda *a, **k: FakeExecutor(interrupt_after=1))
    assert plain.main(["run", str(suite), "--out", str(out), "--gate", "topk", "--gate", "softmax"]) == 130
    err = capsys.readouterr().err
    assert f"interrupted: 1 rows kept in {out / 'safe.jsonl'}; continue with: gatebench run {suite} --out {out} " \
           "--gate topk --gate softmax --resume" in err
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(out), "--resume"])
    assert result.exit_code == 130, result.output
    text = " ".join(result.output.split())
    assert f"interrupted: 2 rows kept in {out / 'safe.jsonl'}; continue with: gatebench run" in text
    assert text.rstrip().endswith("--resume")


# ---------------------------------------------------------------------------------------------------------------
# recover --quick.
# ---------------------------------------------------------------------------------------------------------------
def test_recover_quick_fills_only_the_options_not_given():
    from gatebench.cli.recover import _problem

    def problem(quick: bool, **given):
        optional = {"experts": None, "k": None, "tasks": None, "clusters": None, "steps": None, **given}
        return _problem("dselect_k", "torch", None, 1, quick, {"gating": "static", "experts_mode": "known"},
                        optional)

    quick = problem(True, experts=6, tasks=12)
    assert (quick.experts, quick.k, quick.tasks, quick.clusters, quick.steps) == (6, 2, 12, 4, 150)
    plain = problem(False)
    assert (plain.experts, plain.k, plain.tasks, plain.clusters) == (16, 4, 32, 8)
    for quick_flag in (True, False):
        with pytest.raises(ValueError, match="experts: expected an integer >= 2; got 1"):
            problem(quick_flag, experts=1)


def test_recover_rejects_bad_values_with_or_without_quick():
    from typer.testing import CliRunner

    from gatebench.cli import app

    for extra in ([], ["--quick"]):
        result = CliRunner().invoke(app, ["recover", "--experts", "1", "--seeds", "1", *extra])
        assert result.exit_code == 2 and "experts: expected an integer >= 2" in " ".join(result.output.split())


def test_the_command_line_says_what_is_wrong_with_out_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from gatebench.cli import app

    (tmp_path / "file.txt").write_text("x")
    suite = _suite_file(tmp_path)
    for out, what in ((tmp_path / "file.txt" / "sub", "is a file, so"), (tmp_path, "already has rows")):
        if what == "already has rows":
            (tmp_path / "safe.jsonl").write_text(json.dumps(make_row("timing", "safe", {"gate": "x"}, "ok")) + "\n")
        result = CliRunner().invoke(app, ["run", str(suite), "--out", str(out)])
        text = " ".join(result.output.split())
        assert result.exit_code == 2 and what in text and "Traceback" not in text, result.output
