"""Timing in several fresh processes (``processes = P``): the per-process settings, the rows merged into one per
case, resuming a run that stopped between processes, workers that die or hang, and ``compare`` with the processes
as its units."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from harness.executors import make_executor
from harness.merge import INCOMPLETE, merge_parts, merge_process_rows
from harness.processes import ProcessesExecutor, StreamWorker, worker_settings
from harness.results import ResultsWriter, latest_rows, make_row, read_rows
from harness.runner import run_suite
from harness.suite import TimingSettings, load_suite
from harness.tasks import Task, TaskGroup
from reports.compare import compare_frames
from reports.comparison import METHOD_PROCESSES, Sample, between_runs, process_medians_of, sample_of, welch_log_ratio
from reports.load import load_results

PARAMS = dict(gate="topk", framework="torch", device="cpu", impl="eager", mode="fwd", gating="static", batch=None,
              input_dim=None, experts=8, k=2, dtype="float32")
FAST = TimingSettings(warmup_ms=1.0, rep_ms=4.0, min_reps=3, rounds=4, round_seed=7, processes=2, memory=False)


def _part(process: int, samples: list[float], rounds: list[int], *, status: str = "ok", processes: int = 2,
          run_id: str = "r1", error: str | None = None, **over) -> dict:
    values = dict(samples_ms=samples, sample_rounds=rounds, rounds=max(rounds) + 1, median_ms=float(np.median(samples)),
                  probe_ms=[0.2] * (max(rounds) + 1), probe_version=1, load_before=0.1 * process,
                  load_after=0.1 * process + 0.05, started_at=100.0 + process, ended_at=101.0 + process,
                  max_abs_err=1e-7 * (process + 1), threads=1, clock="cpu") if status == "ok" else {}
    values.update(over)
    row = make_row("timing", "t", PARAMS, status, error=error, **values)
    row.update(process=process, processes=processes, run_id=run_id)
    return row


# --------------------------------------------------------------------------------------------------------------
# Settings.
# --------------------------------------------------------------------------------------------------------------
def test_each_process_gets_its_share_of_rounds_and_budget_and_its_own_seed():
    settings = TimingSettings(rounds=8, rep_ms=100.0, min_reps=5, max_reps=1000, warmup_ms=25.0, round_seed=3,
                              processes=3)
    assert settings.rounds_per_process == 3  # 8 / 3 rounded up
    got = worker_settings(settings, 2)
    assert (got.processes, got.rounds, got.round_seed, got.warmup_ms) == (1, 3, 5, 25.0)
    assert got.rep_ms == pytest.approx(100.0 / 3) and (got.min_reps, got.max_reps) == (2, 334)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_processes_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="processes: expected an integer >= 1"):
        TimingSettings(processes=bad)


def test_processes_refuse_adaptive_stopping_and_ray():
    with pytest.raises(ValueError, match="processes: expected 1 with stop = 'adaptive'"):
        TimingSettings(processes=2, stop="adaptive")
    with pytest.raises(ValueError, match="processes: expected 1 with --executor ray"):
        make_executor(settings=TimingSettings(processes=2), executor="ray")
    assert isinstance(make_executor(settings=TimingSettings(processes=2)), ProcessesExecutor)


# --------------------------------------------------------------------------------------------------------------
# Merging.
# --------------------------------------------------------------------------------------------------------------
def test_parts_merge_into_one_row_with_rounds_renumbered_and_every_sample():
    a = _part(0, [1.0, 2.0, 3.0], [0, 0, 1])
    b = _part(1, [4.0, 5.0], [0, 1], max_abs_err=5e-7)
    row = merge_parts([a, b])
    assert row["status"] == "ok" and row["process"] is None and row["processes"] == 2
    assert row["samples_ms"] == [1.0, 2.0, 3.0, 4.0, 5.0] and row["sample_rounds"] == [0, 0, 1, 2, 3]
    assert row["round_processes"] == [0, 0, 1, 1] and row["rounds"] == 4 and len(row["probe_ms"]) == 4
    assert row["median_ms"] == 3.0 and row["n_samples"] == 5 and row["min_ms"] == 1.0 and row["max_ms"] == 5.0
    assert (row["load_before"], row["load_after"]) == (0.0, pytest.approx(0.15))
    assert (row["started_at"], row["ended_at"]) == (100.0, 102.0) and row["max_abs_err"] == 5e-7
    sample = sample_of(row)
    assert sample.processes.tolist() == [0, 0, 0, 1, 1]


def test_a_failed_skipped_or_missing_process_decides_the_case():
    ok = _part(0, [1.0], [0])
    failed = merge_parts([ok, _part(1, [], [], status="failed", error="boom")])
    assert failed["status"] == "failed" and "process 1 of 2: boom" in failed["error"]
    assert failed["median_ms"] is None and failed["samples_ms"] is None
    both = merge_parts([_part(0, [], [], status="skipped", error="no GPU"), _part(1, [], [], status="skipped",
                                                                                    error="no GPU")])
    assert both["status"] == "skipped" and both["error"] == "no GPU"
    mixed = merge_parts([ok, _part(1, [], [], status="skipped", error="x")])
    assert mixed["status"] == "failed" and "skipped in process(es) [1]" in mixed["error"]
    partial = merge_parts([ok])
    assert partial["status"] == "failed" and partial["error"].startswith(INCOMPLETE)


def test_a_process_timed_again_counts_once_and_the_merged_row_stands_where_its_last_part_was():
    first = _part(1, [], [], status="failed", error="died")
    other = make_row("timing", "t", {**PARAMS, "gate": "softmax"}, "ok", median_ms=1.0)
    rows = [_part(0, [1.0], [0]), first, other, _part(1, [2.0], [0])]
    merged = merge_process_rows(rows)
    assert [row["gate"] for row in merged] == ["softmax", "topk"]
    assert merged[1]["status"] == "ok" and merged[1]["samples_ms"] == [1.0, 2.0]
    assert latest_rows(rows)[merged[1]["case_id"]]["status"] == "ok"


def test_reports_read_one_row_per_case_from_per_process_rows(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsWriter(path) as writer:
        writer.write(_part(0, [1.0, 1.1], [0, 1]))
        writer.write(_part(1, [1.2, 1.3], [0, 1]))
    frame = load_results([path]).frame
    row = frame.iloc[0]
    assert len(frame) == 1 and row["n_samples"] == 4 and list(row["round_processes"]) == [0, 0, 1, 1]


# --------------------------------------------------------------------------------------------------------------
# Running.
# --------------------------------------------------------------------------------------------------------------
def _suite(tmp_path: Path, processes: int = 2) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(f"""name = "p"
kind = "timing"
[settings]
warmup_ms = 1
rep_ms = 4
min_reps = 3
rounds = 4
memory = false
processes = {processes}
[[grid]]
gate = ["softmax", "topk"]
framework = ["torch"]
device = ["cpu"]
impl = ["eager"]
mode = ["fwd"]
gating = ["static"]
dtype = ["float32"]
shapes = [{{ batch = 16, input_dim = 8, experts = 8, k = 2 }}]
""")
    return path


def test_a_suite_is_timed_in_every_process_pass_after_pass(tmp_path):
    suite = load_suite(_suite(tmp_path))
    summary = run_suite(suite, tmp_path, executor=make_executor(settings=suite.settings))
    raw = read_rows(tmp_path / "p.jsonl").rows
    assert [(row["process"], row["gate"]) for row in raw] == [(0, "softmax"), (0, "topk"), (1, "softmax"),
                                                              (1, "topk")]
    assert len({row["run_id"] for row in raw}) == 1 and {row["rounds"] for row in raw} == {2}
    assert [row["round_seed"] for row in raw] == [0, 0, 1, 1]
    assert len(summary.rows) == 2 and all(row["status"] == "ok" for row in summary.rows)
    assert all(row["round_processes"] == [0, 0, 1, 1] for row in summary.rows)


def test_resume_times_only_the_processes_the_run_lacks_under_the_same_run_id(tmp_path):
    suite = load_suite(_suite(tmp_path))
    run_suite(suite, tmp_path, executor=make_executor(settings=suite.settings))
    path = tmp_path / "p.jsonl"
    kept = [line for line in path.read_text().splitlines() if json.loads(line)["process"] == 0]
    path.write_text("\n".join(kept) + "\n")  # the run stopped after its first process
    assert {row["status"] for row in latest_rows(read_rows(path).rows).values()} == {"failed"}
    run_id = json.loads(kept[0])["run_id"]
    summary = run_suite(suite, tmp_path, resume=True, executor=make_executor(settings=suite.settings))
    raw = read_rows(path).rows
    assert [row["process"] for row in raw] == [0, 0, 1, 1] and {row["run_id"] for row in raw} == {run_id}
    assert [row["status"] for row in summary.rows] == ["ok", "ok"]
    again = run_suite(suite, tmp_path, resume=True, executor=make_executor(settings=suite.settings))
    assert again.resumed == 2 and again.rows == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and PR_SET_PDEATHSIG")
def test_a_worker_that_dies_or_hangs_gives_failed_rows_and_the_pass_goes_on(tmp_path):
    task = Task("timing", "t", worker_settings(FAST, 0), PARAMS)
    dead = StreamWorker(python="/bin/false")
    [(_, row)] = dead.run(task)
    assert row["status"] == "failed" and "exited with code 1 without its rows" in row["error"]
    dead.close()
    script = tmp_path / "hang.sh"
    script.write_text("#!/bin/sh\nexec sleep 60\n")
    script.chmod(0o755)
    hung = StreamWorker(python=str(script), timeout_s=0.3)
    pairs = hung.run(TaskGroup((task, Task("timing", "t", task.settings, {**PARAMS, "gate": "softmax"}))))
    assert [row["status"] for _, row in pairs] == ["failed", "failed"]
    assert "ran past its time limit (0.3 s per case)" in pairs[0][1]["error"] and not hung.alive


def test_the_stream_worker_answers_item_after_item_and_refuses_other_arguments():
    import subprocess

    worker = StreamWorker()
    try:
        for gate in ("topk", "softmax"):
            [(_, row)] = worker.run(Task("timing", "t", worker_settings(FAST, 0), {**PARAMS, "gate": gate}))
            assert row["status"] == "ok" and row["gate"] == gate and row["rounds"] == 2
        assert worker.alive
    finally:
        worker.close()
    got = subprocess.run([sys.executable, "-m", "harness", "--nope"], capture_output=True, text=True, check=False)
    assert got.returncode == 2 and "usage: python -m harness [--stream]" in got.stderr


# --------------------------------------------------------------------------------------------------------------
# Comparing.
# --------------------------------------------------------------------------------------------------------------
def _sample(process_medians: list[float], rounds_per_process: int = 2) -> Sample:
    values, rounds, owners = [], [], []
    for p, median in enumerate(process_medians):
        for r in range(rounds_per_process):
            for x in (0.98, 1.0, 1.02):
                values.append(median * x)
                rounds.append(p * rounds_per_process + r)
                owners.append(p)
    return Sample(np.asarray(values), rounds=np.asarray(rounds), processes=np.asarray(owners))


def test_the_welch_interval_over_processes_is_scipys_on_the_logs():
    new, old = np.array([1.3, 1.5, 1.4, 1.6]), np.array([1.0, 1.1, 0.9, 1.05])
    ratio, low, high = welch_log_ratio(new, old, 0.95)
    test = stats.ttest_ind(np.log(new), np.log(old), equal_var=False)
    ci = test.confidence_interval(0.95)
    assert ratio == pytest.approx(math.exp(np.log(new).mean() - np.log(old).mean()))
    assert (low, high) == (pytest.approx(math.exp(ci.low)), pytest.approx(math.exp(ci.high)))


def test_between_runs_uses_processes_when_both_sides_have_three_and_rounds_otherwise():
    case, base = _sample([1.5, 1.6, 1.4]), _sample([1.0, 1.05, 0.95])
    assert process_medians_of(case) == pytest.approx([1.5, 1.6, 1.4])
    got = between_runs(case, base)
    assert got.method == METHOD_PROCESSES and got.units == 3 and 1.0 < got.ci_low < got.ratio < got.ci_high
    two = _sample([1.5, 1.6])
    assert between_runs(two, base).method != METHOD_PROCESSES


def _row(process_medians: list[float], iqr_ms: float) -> dict:
    sample = _sample(process_medians, 2)
    row = make_row("timing", "t", PARAMS, "ok", samples_ms=sample.values.tolist(),
                   sample_rounds=sample.rounds.tolist(), median_ms=float(np.median(sample.values)), iqr_ms=iqr_ms,
                   rounds=int(sample.rounds.max()) + 1, threads=1, clock="cpu")
    row["round_processes"] = [p for p in range(len(process_medians)) for _ in range(2)]
    row["processes"] = len(process_medians)
    return row


def test_compare_judges_processes_on_their_interval_and_not_on_the_rows_spread():
    import pandas as pd

    old = _row([1.0, 1.1, 0.9, 1.05], iqr_ms=0.4)  # an IQR of 40% of the median: noisy by the row's own spread
    slower = _row([1.6, 1.8, 1.45, 1.7], iqr_ms=0.6)
    same = _row([1.05, 0.95, 1.0, 1.1], iqr_ms=0.4)
    got = compare_frames(pd.DataFrame([old]), pd.DataFrame([slower]))
    assert got.table.iloc[0]["mark"] == "+" and got.table.iloc[0]["method"] == METHOD_PROCESSES
    assert got.table.iloc[0]["flags"] == ""
    assert got.exit_code() == 1
    assert compare_frames(pd.DataFrame([old]), pd.DataFrame([same])).exit_code() == 0
    rounds_only = {**slower, "round_processes": None}  # the rounds as units: the rows' IQR flags them noisy
    held = compare_frames(pd.DataFrame([old]), pd.DataFrame([rounds_only])).table.iloc[0]
    assert held["method"] != METHOD_PROCESSES and held["flags"] == "noisy"


def test_compare_prints_how_many_processes_each_side_had():
    import pandas as pd

    from reports.compare import format_units

    old = _row([1.0, 1.1, 0.9], iqr_ms=0.01)
    table = compare_frames(pd.DataFrame([old]), pd.DataFrame([dict(old)])).table
    assert format_units(table.iloc[0]).endswith("(6/6 rounds, 3/3 processes)")


def test_the_command_line_runs_a_suite_in_several_processes_and_reports_one_row_per_case(tmp_path):
    from typer.testing import CliRunner

    from gatebench.cli import app

    suite = _suite(tmp_path, processes=1)
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path), "--processes", "2"])
    assert result.exit_code == 0, result.output
    assert "2 run (2 ok, 0 failed, 0 skipped)" in result.output
    assert [row["process"] for row in read_rows(tmp_path / "p.jsonl").rows] == [0, 0, 1, 1]
    bad = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "b"), "--processes", "0"])
    assert bad.exit_code == 2 and "processes: expected an integer >= 1" in bad.output
