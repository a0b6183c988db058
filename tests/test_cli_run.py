"""End to end: ``gatebench run`` on the smoke suite, ``list``, and a suite killed with SIGKILL then resumed."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gatebench.cli import run as run_command
from harness import cases
from harness.env import quiet_frameworks
from harness.results import read_rows
from harness.suite import expand

ROOT = Path(__file__).resolve().parent.parent


def _app() -> typer.Typer:
    """The `gatebench` app (gatebench/cli/__init__.py), with the run/list commands of gatebench/cli/run.py."""
    from gatebench.cli import app

    assert run_command.register  # the module that defines run/list
    return app


@pytest.mark.torch
@pytest.mark.tf
def test_smoke_suite_gives_one_ok_row_per_gate_framework_mode_gating(gt, gf, tmp_path):
    result = CliRunner().invoke(_app(), ["run", str(ROOT / "suites" / "smoke.toml"), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    read = read_rows(tmp_path / "smoke.jsonl")
    assert read.problems == []
    keys = [tuple(r[a] for a in ("gate", "framework", "mode", "gating")) for r in read.rows if r["experts"] == 16]
    assert sorted(keys) == sorted(itertools.product(cases.GATES, cases.FRAMEWORKS, cases.MODES, cases.GATINGS))
    for row in read.rows:
        assert row["status"] == "ok", (row["case_id"], row["error"])
        assert row["median_ms"] > 0 and row["iqr_ms"] >= 0 and row["n_samples"] >= 5
        assert row["max_abs_err"] < 1e-4
        if row["mode"] != "fwd":
            assert row["max_grad_err"] < 1e-3 and row["fd_grad_err"] < 1e-5
    n = len(read.rows)
    assert f"{n} run ({n} ok, 0 failed" in " ".join(result.output.split())


def test_list_shows_suites_gates_and_frameworks():
    result = CliRunner().invoke(_app(), ["list"])
    assert result.exit_code == 0, result.output
    for word in ("smoke", "kernels", "regress", "dselect_k", "torch", "tf", "impls:", "triton"):
        assert word in result.output


def test_run_rejects_an_unknown_suite():
    result = CliRunner().invoke(_app(), ["run", "no_such_suite"])
    assert result.exit_code != 0 and "suite" in result.output


KILL_SUITE = """
name = "killme"
[settings]
warmup_ms = 5
rep_ms = 250
min_reps = 3
[[grid]]
gate = ["softmax", "topk", "dselect_k", "hard_concrete"]
framework = ["torch"]
mode = ["fwd", "fwdbwd"]
gating = ["static"]
batch = 1
input_dim = 1
experts = 8
k = 2
"""


@pytest.mark.torch
def test_sigkill_mid_suite_then_resume_records_every_case_exactly_once(gt, tmp_path):
    suite = tmp_path / "killme.toml"
    suite.write_text(KILL_SUITE)
    out = tmp_path / "out"
    results = out / "killme.jsonl"
    cmd = [sys.executable, "-m", "gatebench", "run", str(suite), "--out", str(out)]  # `gatebench run`
    env = quiet_frameworks({**os.environ, "PYTHONPATH": str(ROOT)})
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if results.exists() and len(read_rows(results).rows) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the suite finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    before = read_rows(results)
    n_before = len(before.rows)
    assert 2 <= n_before < 8
    done = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    after = read_rows(results)
    counts = Counter(row["case_id"] for row in after.rows)
    assert set(counts) == {c.case_id for c in expand(suite)}
    assert all(n == 1 for n in counts.values()), counts
    assert all(row["status"] == "ok" for row in after.rows)
    assert f"{n_before} already done" in " ".join(done.stdout.split())


@pytest.mark.torch
def test_run_with_filters_and_isolate_writes_only_the_selected_cases(gt, tmp_path):
    out = tmp_path / "rows.jsonl"
    result = CliRunner().invoke(_app(), [
        "run", "smoke", "--out", str(out), "--isolate", "--gate", "topk", "--framework", "torch", "--mode", "fwd",
    ])
    assert result.exit_code == 0, result.output
    rows = read_rows(out).rows
    assert sorted(r["gating"] for r in rows) == ["per_example", "static"]
    assert all(r["gate"] == "topk" and r["framework"] == "torch" and r["status"] == "ok" for r in rows)


def test_run_rejects_bad_settings_naming_the_file_and_key_before_any_case(tmp_path):
    suite = tmp_path / "bad.toml"
    suite.write_text(KILL_SUITE.replace("warmup_ms = 5", 'warmup_ms = "fast"'))
    result = CliRunner().invoke(_app(), ["run", str(suite), "--out", str(tmp_path / "out")])
    text = " ".join(result.output.split())
    assert result.exit_code != 0 and "settings.warmup_ms" in text and "bad.toml" in text, result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.torch
def test_python_m_gatebench_without_typer_runs_plain(gt, tmp_path):
    """Where typer or rich is missing (a bare GPU machine), ``python -m gatebench run`` prints plain lines."""
    suite = tmp_path / "plain.toml"
    suite.write_text('name = "plain"\n[settings]\nwarmup_ms = 1\nrep_ms = 3\n[[grid]]\ngate = "softmax"\n'
                     'framework = "torch"\nmode = "fwd"\ngating = "static"\n'
                     'shapes = [{batch = 4, input_dim = 4, experts = 4, k = 2}]\n')
    code = ("import importlib.util, runpy, sys\n"
            "real = importlib.util.find_spec\n"
            "importlib.util.find_spec = lambda name, *a: None if name in ('typer', 'rich') else real(name, *a)\n"
            "sys.argv = ['gatebench', 'run', sys.argv[1], '--out', sys.argv[2]]\n"
            "runpy.run_module('gatebench', run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", code, str(suite), str(tmp_path / "out")], cwd=ROOT,
                          env=quiet_frameworks({**os.environ, "PYTHONPATH": str(ROOT)}), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[ok] batch=None,device=cpu,dtype=float32,experts=4,framework=torch," in done.stdout
    assert " ms iqr " in done.stdout
    assert "1 run (1 ok, 0 failed, 0 skipped), 0 already done" in done.stdout


def test_run_times_cases_with_no_other_python_thread_in_the_process(gt, tmp_path, monkeypatch):
    # A second Python thread (a progress bar's auto-refresh) takes the GIL while a case is timed; on a busy
    # machine it is preempted holding it and the timing thread waits. The bar must redraw between rows only.
    import threading

    from harness import tasks as tasks_module

    seen: list[list[str]] = []
    real = tasks_module.time_fn

    def spy(fn, **kwargs):
        seen.append([t.name for t in threading.enumerate() if t is not threading.current_thread()])
        return real(fn, **kwargs)

    monkeypatch.setattr(tasks_module, "time_fn", spy)
    result = CliRunner().invoke(_app(), ["run", "smoke", "--out", str(tmp_path), "--gate", "topk", "--framework",
                                         "torch", "--mode", "fwd", "--rounds", "2"])
    assert result.exit_code == 0, result.output
    assert seen and all(names == [] for names in seen), seen


def test_run_records_the_clock_and_refuses_cpu_time_with_several_threads(gt, tmp_path):
    bad = CliRunner().invoke(_app(), ["run", "smoke", "--out", str(tmp_path), "--clock", "cpu", "--threads", "2"])
    assert bad.exit_code == 2 and "expected threads = 1 with it; got threads = 2" in " ".join(bad.output.split())
    args = ["run", "smoke", "--gate", "topk", "--framework", "torch", "--mode", "fwd", "--rounds", "2"]
    for clock in ("wall", "cpu"):
        out = tmp_path / f"{clock}.jsonl"
        result = CliRunner().invoke(_app(), [*args, "--out", str(out), "--clock", clock])
        assert result.exit_code == 0, result.output
        assert {r["clock"] for r in read_rows(out).rows} == {clock}
