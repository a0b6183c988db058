"""pytest-benchmark's ``--benchmark-json`` output of tests/benchmarks is read by ``gatebench report``/``compare``:
the benchmarks run in a subprocess (PyTorch forward cases), their JSON loads as timing rows carrying the case
columns and raw samples, and the report's table holds the ratios against Top-k."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gates import GATE_NAMES
from harness.env import quiet_frameworks
from reports.compare import compare_paths
from reports.load import load_results
from reports.tables import timing_table

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("pytest_benchmark")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    env = quiet_frameworks(dict(os.environ))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/benchmarks",
            "-k",
            "torch-fwd]",
            "--benchmark-only",
            "--benchmark-save-data",
            f"--benchmark-json={out}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert f"{len(GATE_NAMES)} passed" in run.stdout, run.stdout[-2000:]  # one torch fwd benchmark per gate
    return out


def test_benchmark_json_loads_as_timing_rows(bench_json):
    loaded = load_results([bench_json])
    assert loaded.problems == []
    frame = loaded.frame
    assert sorted(frame["gate"]) == sorted(GATE_NAMES)
    assert set(frame["framework"]) == {"torch"} and set(frame["mode"]) == {"fwd"}
    assert set(frame["gating"]) == {"per_example"} and set(frame["experts"]) == {16}
    for _, row in frame.iterrows():
        assert len(row["samples_ms"]) == row["n_samples"] == 20
        assert row["median_ms"] > 0 and row["case_id"].startswith("batch=64,")
    table = timing_table(frame)
    assert (table.loc[table["gate"] == "topk", "mark"] == "baseline").all()
    others = table[table["gate"] != "topk"]
    assert others["ratio"].notna().all() and others["ci_low"].notna().all()
    assert (others["ci_low"] <= others["ratio"]).all() and (others["ratio"] <= others["ci_high"]).all()


def test_report_and_compare_accept_benchmark_json(bench_json, tmp_path):
    from reports.render import write_report

    report = write_report([bench_json], tmp_path / "report")
    md = report.summary_md.read_text()
    assert "| dselect_k | torch | eager |" in md and "topk/eager" in md
    comparison, problems = compare_paths([str(bench_json)], [str(bench_json)])
    assert problems == [] and not comparison.failed and len(comparison.table) == len(GATE_NAMES)
