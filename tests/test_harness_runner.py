"""Runner, adapters and executors on the CPU: accuracy first, skips with reasons, peak memory, isolation."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from harness.executors import ROW_MARKER, SubprocessExecutor
from harness.results import make_row
from harness.runner import run_suite
from harness.suite import TimingSettings
from harness.tasks import Task, execute_task

FAST = TimingSettings(warmup_ms=1.0, rep_ms=5.0, min_reps=3)


def _task(settings: TimingSettings = FAST, **over) -> Task:
    params = dict(gate="softmax", framework="torch", device="cpu", impl="eager", mode="fwd", gating="per_example",
                  batch=16, input_dim=8, experts=8, k=2, dtype="float32")
    params.update(over)
    if params["gating"] == "static":
        params.update(batch=None, input_dim=None)
    return Task("timing", "t", settings, params)


@pytest.mark.torch
@pytest.mark.parametrize("gate", ["topk", "dselect_k"])
@pytest.mark.parametrize("mode", ["fwd", "bwd", "fwdbwd"])
def test_torch_case_row_has_statistics_accuracy_and_memory(gt, gate, mode):
    row = execute_task(_task(gate=gate, mode=mode))
    assert row["status"] == "ok", row["error"]
    assert row["n_samples"] >= 3 and len(row["samples_ms"]) == row["n_samples"]
    assert row["p20_ms"] <= row["median_ms"] <= row["p80_ms"]
    assert row["max_abs_err"] < 1e-4
    assert (row["max_grad_err"] is None) == (mode == "fwd")
    assert row["peak_mem_bytes"] > 0
    assert row["provenance"]["torch"]


@pytest.mark.tf
@pytest.mark.parametrize("mode", ["fwd", "bwd", "fwdbwd"])
def test_tf_case_row_and_cpu_memory_is_none(gf, mode):
    row = execute_task(_task(framework="tf", gate="hard_concrete", mode=mode, gating="static"))
    assert row["status"] == "ok", row["error"]
    assert row["median_ms"] > 0 and row["iqr_ms"] >= 0
    assert row["peak_mem_bytes"] is None  # no allocator statistics for TF on the CPU (documented)
    assert row["provenance"]["tensorflow"]


@pytest.mark.tf
def test_tf_compiled_records_compile_time_and_skips_backward_alone(gf):
    row = execute_task(_task(framework="tf", gate="dselect_k", impl="compiled", mode="fwdbwd"))
    assert row["status"] == "ok", row["error"]
    assert row["compile_ms"] > 0 and row["max_grad_err"] < 1e-3
    row = execute_task(_task(framework="tf", gate="dselect_k", impl="compiled", mode="bwd"))
    assert row["status"] == "skipped" and "fwdbwd" in row["error"]


@pytest.mark.torch
def test_accuracy_mismatch_is_a_failed_row_and_is_not_timed(gt, monkeypatch):
    import gates.torch as G

    real = G.softmax_weights
    monkeypatch.setattr(G, "softmax_weights", lambda logits: real(logits) * 1.01)
    row = execute_task(_task(mode="fwd"))
    assert row["status"] == "failed" and "gates.reference" in row["error"]
    assert row["max_abs_err"] > 1e-3 and row["median_ms"] is None and row["samples_ms"] is None


@pytest.mark.torch
def test_wrong_gradient_is_a_failed_row(gt, monkeypatch):
    import torch

    import gates.torch as G

    class Scaled(torch.autograd.Function):  # right forward, backward off by 10%
        @staticmethod
        def forward(ctx, q):
            return q.clone()

        @staticmethod
        def backward(ctx, g):
            return 1.1 * g

    real = G.softmax_weights
    monkeypatch.setattr(G, "softmax_weights", lambda logits: Scaled.apply(real(logits)))
    row = execute_task(_task(mode="fwdbwd"))
    assert row["status"] == "failed" and "gradient" in row["error"], row["error"]


@pytest.mark.torch
def test_missing_gpu_is_a_skip_with_reason(gt):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present here")
    row = execute_task(_task(device="gpu"))
    assert row["status"] == "skipped" and "CUDA" in row["error"]


@pytest.mark.torch
def test_triton_impl_on_the_cpu_is_a_skip_with_reason(gt):
    row = execute_task(_task(gate="dselect_k", impl="triton", mode="fwdbwd", experts=16, k=4))
    assert row["status"] == "skipped" and "impl 'triton' runs on CUDA GPUs" in row["error"]


@pytest.mark.torch
def test_reference_over_memory_budget_is_a_skip_with_reason(gt):
    task = _task(dataclasses.replace(FAST, max_reference_bytes=1024**2), gate="dselect_k", impl="reference",
                 batch=4096, experts=512, k=8)
    row = execute_task(task)
    assert row["status"] == "skipped" and "max_reference_bytes" in row["error"]


@pytest.mark.torch
def test_torch_cpu_peak_memory_counts_live_tensors(gt):
    import torch

    from harness.adapters.torch import peak_memory_bytes

    def two_live():
        a = torch.ones(1_000_000)  # 4 MB
        b = a * 2  # 4 MB more while a is alive
        del a
        c = b + 1  # 4 MB while b is alive: the peak stays at 8 MB
        return c

    peak = peak_memory_bytes(two_live)
    assert 8_000_000 <= peak < 8_100_000
    assert peak_memory_bytes(lambda: None) == 0


def test_unknown_framework_param_is_a_failed_row_naming_it():
    row = execute_task(_task(framework="jax"))
    assert row["status"] == "failed" and "framework" in row["error"]


@pytest.mark.torch
def test_isolated_subprocess_executor_runs_a_case_and_reports_a_crash(gt, tmp_path):
    rows = [row for _, row in SubprocessExecutor().map([_task(gate="topk")])]
    assert rows[0]["status"] == "ok", rows[0]["error"]
    crasher = tmp_path / "crash.sh"
    crasher.write_text("#!/bin/sh\nkill -9 $$\n")
    crasher.chmod(0o755)
    rows = [row for _, row in SubprocessExecutor(python=str(crasher)).map([_task()])]
    assert rows[0]["status"] == "failed" and "code -9" in rows[0]["error"]


@pytest.mark.torch
def test_run_suite_appends_one_row_per_case_and_refuses_to_mix_runs(gt, tmp_path):
    suite = {"name": "mini", "settings": {"warmup_ms": 1, "rep_ms": 3}, "grid": [{
        "gate": ["softmax", "topk"], "framework": ["torch"], "mode": ["fwd"], "gating": ["static"],
        "batch": 8, "input_dim": 4, "experts": 4, "k": 2}]}
    summary = run_suite(suite, tmp_path)
    assert [r["gate"] for r in summary.rows] == ["softmax", "topk"]
    with pytest.raises(ValueError, match="resume"):
        run_suite(suite, tmp_path)
    again = run_suite(suite, tmp_path, resume=True)
    assert again.resumed == 2 and again.rows == []
    assert sys.modules.get("tensorflow") is None or True  # TF may be loaded by other tests; nothing to check
    assert np.isfinite([r["median_ms"] for r in summary.rows]).all()


@pytest.mark.parametrize("gate", ["topk", "dselect_k"])
def test_batch_larger_than_the_checked_rows_checks_a_sub_batch(G, framework, gate):
    from harness.cases import CHECK_ROWS

    row = execute_task(_task(framework=framework, gate=gate, mode="fwdbwd", batch=CHECK_ROWS + 44))
    assert row["status"] == "ok", row["error"]
    assert row["fd_grad_err"] < 1e-5 and row["max_grad_err"] < 1e-3


@pytest.mark.torch
def test_recovery_suite_runs_through_the_same_runner_and_resume(gt, tmp_path):
    pytest.importorskip("harness.recovery.suite")
    suite = {"name": "rec", "kind": "recovery", "gates": ["softmax", "topk"], "frameworks": ["torch"], "seeds": 1,
             "problems": [{"name": "tiny", "steps": 10, "samples": 64, "test_samples": 32, "eval_every": 5}]}
    summary = run_suite(suite, tmp_path)
    assert [r["kind"] for r in summary.rows] == ["recovery", "recovery"]
    assert all(r["status"] == "ok" for r in summary.rows), [r["error"] for r in summary.rows]
    assert summary.rows[0]["provenance"]["torch"]
    assert run_suite(suite, tmp_path, resume=True).resumed == 2


def test_missing_framework_is_a_skip_with_reason(monkeypatch):
    import harness.adapters as adapters

    monkeypatch.setattr(adapters, "framework_installed", lambda framework: False)
    row = execute_task(_task(framework="tf"))
    assert row["status"] == "skipped" and "not installed" in row["error"]
    assert row["median_ms"] is None


@pytest.mark.parametrize("dtype", ["bfloat16", "float64"])
@pytest.mark.parametrize("gate", ["dselect_k", "hard_concrete"])
def test_other_dtypes_pass_their_tolerances(G, framework, gate, dtype):
    row = execute_task(_task(framework=framework, gate=gate, mode="fwdbwd", dtype=dtype))
    assert row["status"] == "ok", row["error"]
    assert row["max_abs_err"] < (1e-9 if dtype == "float64" else 6e-2)


@pytest.mark.torch
def test_timing_row_records_the_timer_warmup_and_estimate_and_the_workload_labels(gt, monkeypatch):
    import harness.adapters as adapters

    real = adapters.get_adapter

    def labelled(framework):
        adapter = real(framework)

        class Labelled:
            def __getattr__(self, name):
                return getattr(adapter, name)

            def build_workload(self, case, settings):
                workload = adapter.build_workload(case, settings)
                object.__setattr__(workload, "labels", {"gate_impl": "factorized", "compiler": None})
                return workload

        return Labelled()

    monkeypatch.setattr("harness.tasks.get_adapter", labelled)
    row = execute_task(_task(gate="topk"))
    assert row["status"] == "ok", row["error"]
    assert row["warmup_reps"] >= 1 and row["estimate_ms"] > 0
    assert row["gate_impl"] == "factorized" and row["compiler"] is None


def test_task_crosses_a_process_as_json_and_settings_are_checked():
    task = _task(dataclasses.replace(FAST, flush_l2=True), gating="static")
    back = Task.from_json(json.loads(json.dumps(task.to_json())))
    assert back == task and isinstance(back.settings, TimingSettings) and back.settings.flush_l2 is True
    assert Task("timing", "t", {"rep_ms": 2}, {}).settings == TimingSettings(rep_ms=2.0)
    with pytest.raises(ValueError, match="settings.rep_ms: expected a finite number >= 0"):
        Task("timing", "t", {"rep_ms": -1}, {})
    recovery = Task("recovery", "r", None, {"gate": "topk"})
    assert Task.from_json(json.loads(json.dumps(recovery.to_json()))) == recovery


def test_failed_rows_have_every_statistic_and_bad_values_are_value_errors():
    row = SubprocessExecutor._failed(_task(), "subprocess: gone")
    assert row["status"] == "failed" and row["median_ms"] is None and row["warmup_reps"] is None
    params = _task().params
    with pytest.raises(ValueError, match="status: expected one of ok, failed, skipped; got 'done'"):
        make_row("timing", "t", params, "done")
    with pytest.raises(ValueError, match="median_ms: expected a number"):
        make_row("timing", "t", params, "ok", median_ms="fast")
    with pytest.raises(ValueError, match="experts: expected an integer"):
        make_row("timing", "t", dict(params, experts="8"), "ok")
    with pytest.raises(ValueError, match="kind: expected one of timing, recovery"):
        make_row("speed", "t", params, "ok")
    assert make_row("recovery", "r", {"gate": "topk", "seed": 0}, "ok", f1=np.float64(0.5), lr=0.1)["lr"] == 0.1


def test_python_m_harness_is_the_worker(tmp_path):
    task = _task(framework="jax")  # fails fast, without loading a framework
    done = subprocess.run([sys.executable, "-m", "harness"], input=json.dumps(task.to_json()), capture_output=True,
                          text=True, timeout=120, check=True)
    line = [ln for ln in done.stdout.splitlines() if ln.startswith(ROW_MARKER)][-1]
    row = json.loads(line[len(ROW_MARKER):])
    assert row["status"] == "failed" and "framework" in row["error"] and row["case_id"] == task.case_id
