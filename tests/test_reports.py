"""reports: loading, statistics and tables checked against a synthetic results file with known answers
(tests/fixtures/synthetic.py), and the report directory's content."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from reports import stats
from reports.load import SCHEMA, load_results
from reports.tables import recovery_table, timing_table
from tests.fixtures.synthetic import DSELECT_F1_GAIN, N_SAMPLES, base_draws, write_fixture


@pytest.fixture(scope="module")
def fixture_file(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("fixture") / "fixture.jsonl")


@pytest.fixture(scope="module")
def loaded(fixture_file):
    return load_results([fixture_file])


@pytest.fixture(scope="module")
def timing(loaded):
    return timing_table(loaded.frame)


def _case(table: pd.DataFrame, **match) -> pd.Series:
    sel = table
    for key, value in match.items():
        sel = sel[sel[key] == value]
    assert len(sel) == 1, f"expected one row for {match}; got {len(sel)}"
    return sel.iloc[0]


SMALL = {"batch": 256, "experts": 16, "mode": "fwd"}


# ---- loading
def test_load_reports_corrupt_lines_and_keeps_the_rest(loaded, fixture_file):
    problems = loaded.problems
    assert len(problems) == 3, problems
    assert any("not JSON" in p for p in problems)
    assert any("not a gatebench row" in p for p in problems)
    assert any("timing row without gate" in p for p in problems)
    frame = loaded.frame
    assert (frame["kind"] == "timing").sum() == 3 * 2 * 6 + 2
    assert (frame["kind"] == "recovery").sum() == 15
    assert set(frame["source"]) == {str(fixture_file)}


def test_load_declares_schema_and_keeps_unknown_columns(loaded):
    frame = loaded.frame
    for name, dtype in SCHEMA.items():
        assert name in frame.columns
        assert str(frame[name].dtype) == dtype, f"{name}: {frame[name].dtype} != {dtype}"
    assert (frame.loc[frame["kind"] == "recovery", "new_unknown_column"] == "kept").all()
    row = frame[(frame["kind"] == "timing") & (frame["status"] == "ok")].iloc[0]
    assert len(row["samples_ms"]) == N_SAMPLES and isinstance(row["provenance"], dict)


def test_load_missing_path_and_bad_number_are_problems(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(
        json.dumps(
            {
                "kind": "timing",
                "gate": "topk",
                "framework": "torch",
                "case_id": "c",
                "status": "ok",
                "median_ms": "fast",
            }
        )
        + "\n"
    )
    got = load_results([path, tmp_path / "absent.jsonl"])
    assert len(got.frame) == 1 and pd.isna(got.frame["median_ms"].iloc[0])
    assert any("absent.jsonl: no such file" in p for p in got.problems)
    assert any("'median_ms': expected a number" in p for p in got.problems)


def test_load_pytest_benchmark_json(tmp_path):
    doc = {
        "machine_info": {"node": "box", "python_version": "3.11", "cpu": {"brand_raw": "cpu"}},
        "commit_info": {"id": "abc", "dirty": False},
        "datetime": "2026-01-01T00:00:00",
        "version": "5.1.0",
        "benchmarks": [
            {
                "name": "test_gate[topk]",
                "fullname": "tests/benchmarks/x.py::test_gate[topk]",
                "params": {"gate": "topk"},
                "extra_info": {"framework": "torch", "mode": "fwd", "experts": 16},
                "stats": {
                    "median": 0.002,
                    "mean": 0.0021,
                    "min": 0.001,
                    "max": 0.004,
                    "iqr": 0.0005,
                    "rounds": 4,
                    "data": [0.001, 0.002, 0.002, 0.004],
                },
            },
            {"name": "broken"},
        ],
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(doc))
    got = load_results(path)
    assert len(got.frame) == 1 and len(got.problems) == 1 and "without 'stats'" in got.problems[0]
    row = got.frame.iloc[0]
    assert row["kind"] == "timing" and row["gate"] == "topk" and row["framework"] == "torch"
    assert row["median_ms"] == pytest.approx(2.0) and row["samples_ms"] == pytest.approx([1.0, 2.0, 2.0, 4.0])
    assert row["experts"] == 16 and row["provenance"]["commit"] == "abc"


# ---- statistics
def test_bootstrap_interval_scales_with_the_ratio():
    a, _ = base_draws()
    lo1, hi1 = stats.bootstrap_ratio_ci(a, a, seed=3)
    lo2, hi2 = stats.bootstrap_ratio_ci(2 * a, a, seed=3)  # same resamples, numerator doubled
    assert lo1 < 1.0 < hi1
    assert (lo2, hi2) == pytest.approx((2 * lo1, 2 * hi1), rel=1e-12)


def test_bootstrap_interval_narrows_with_more_samples():
    rng = np.random.default_rng(0)
    small, big = rng.lognormal(0, 0.1, 20), rng.lognormal(0, 0.1, 2000)
    lo_s, hi_s = stats.bootstrap_ratio_ci(small, small[::-1].copy(), seed=0)
    lo_b, hi_b = stats.bootstrap_ratio_ci(big, big[::-1].copy(), seed=0)
    assert hi_b - lo_b < (hi_s - lo_s) / 3


def test_marks():
    a, _ = base_draws()
    assert stats.mark(2.0, stats.mann_whitney_p(2 * a, a)) == stats.SLOWER
    assert stats.mark(0.5, stats.mann_whitney_p(0.5 * a, a)) == stats.FASTER
    assert stats.mann_whitney_p(a[::-1].copy(), a) == 1.0
    assert stats.mark(1.0, 1.0) == stats.SAME
    assert stats.mark(1.05, 1e-9, factor=1.1) == stats.SAME  # significant but within the factor
    assert stats.mark(2.0, float("nan")) == stats.UNKNOWN
    with pytest.raises(ValueError, match="factor"):
        stats.mark(1.0, 0.5, factor=0.5)
    with pytest.raises(ValueError, match="level"):
        stats.bootstrap_ratio_ci(a, a, level=1.5)


def test_paired_test():
    base = np.array([0.5, 0.6, 0.55, 0.5, 0.62])
    got = stats.paired_test(base + DSELECT_F1_GAIN, base)
    assert got.mean_diff == pytest.approx(0.30) and got.p_value < 1e-3 and got.n_pairs == 5
    assert stats.paired_test(base, base).p_value == 1.0
    with_nan = stats.paired_test(np.array([1.0, np.nan, 3.0, 4.5]), np.array([0.5, 2.0, np.nan, 4.0]))
    assert with_nan.n_pairs == 2 and with_nan.mean_diff == 0.5 and with_nan.p_value == 0.0
    with pytest.raises(ValueError, match="paired"):
        stats.paired_test(base, base[:3])


# ---- timing table
def test_timing_ratio_ci_and_marks(timing):
    a, b = base_draws()
    slow = _case(timing, gate="dselect_k", framework="torch", **SMALL)
    assert slow["ratio"] == 2.0  # exact: the samples are exactly twice the baseline's
    assert 1.8 < slow["ci_low"] < 2.0 < slow["ci_high"] < 2.2
    assert slow["mark"] == "slower" and slow["p_value"] < 1e-10 and slow["baseline"] == "topk/eager"
    assert slow["median_ms"] == pytest.approx(2 * np.median(a))

    fast = _case(timing, gate="hard_concrete", framework="torch", **SMALL)
    assert fast["ratio"] == 0.5 and fast["mark"] == "faster" and fast["ci_low"] < 0.5 < fast["ci_high"]

    same = _case(timing, gate="softmax", framework="torch", **SMALL)
    assert same["ratio"] == 1.0 and same["p_value"] == 1.0 and same["mark"] == "not significant"
    assert same["ci_low"] < 1.0 < same["ci_high"]

    base = _case(timing, gate="topk", framework="torch", **SMALL)
    assert base["mark"] == "baseline" and base["ratio"] == 1.0


def test_timing_baseline_is_per_framework(timing):
    a, b = base_draws()
    tf_dselect = _case(timing, gate="dselect_k", framework="tf", **SMALL)
    # Against Top-k in TF (3 * B, shuffled copy), not against Top-k in torch (A): ratio 1, not 3.
    assert tf_dselect["ratio"] == 1.0 and tf_dselect["mark"] == "not significant"
    assert tf_dselect["median_ms"] == pytest.approx(3 * np.median(b))
    assert tf_dselect["mem_ratio"] == 2.0


def test_timing_table_excludes_failed_and_skipped(timing):
    assert len(timing) == 3 * 2 * 6
    assert not ((timing["impl"] == "compiled") | (timing["device"] == "gpu")).any()


def test_timing_other_baseline_and_missing_baseline(loaded):
    table = timing_table(loaded.frame, baseline="softmax")
    hc = _case(table, gate="hard_concrete", framework="torch", **SMALL)
    assert hc["ratio"] == 0.5 and hc["baseline"] == "softmax/eager"
    tf_row = _case(table, gate="topk", framework="tf", **SMALL)  # no softmax in TF
    assert np.isnan(tf_row["ratio"]) and tf_row["mark"] == "n/a" and "missing" in tf_row["baseline"]
    with pytest.raises(ValueError, match="baseline"):
        timing_table(loaded.frame, baseline="")


def test_recovery_table_mean_se_and_paired_test(loaded):
    table = recovery_table(loaded.frame)
    ds = _case(table, gate="dselect_k")
    base_f1 = np.array([0.50, 0.60, 0.55, 0.50, 0.62])
    assert ds["f1_mean"] == pytest.approx(np.mean(base_f1 + DSELECT_F1_GAIN))
    assert ds["f1_se"] == pytest.approx(np.std(base_f1 + DSELECT_F1_GAIN, ddof=1) / np.sqrt(5))
    assert ds["f1_diff"] == pytest.approx(0.30) and ds["f1_p"] < 1e-3 and ds["f1_mark"] == "better"
    assert ds["seeds"] == 5
    sm = _case(table, gate="softmax")
    assert sm["f1_diff"] == 0.0 and sm["f1_p"] == 1.0 and sm["f1_mark"] == "not significant"
    assert sm["baseline differs"] == "selection=nonzero" and ds["baseline differs"] == ""
    assert _case(table, gate="topk")["f1_mark"] == "baseline"
    # support_changes: lower is better; dselect_k settles (0) where topk keeps changing (3).
    assert ds["support_changes_mark"] == "better"


def test_recovery_groups_by_every_case_parameter(tmp_path):
    """A sweep over a float knob (lr) gives one table row per value, each compared with Top-k at that value."""
    from harness.results import ResultsWriter, make_row

    path = tmp_path / "sweep.jsonl"
    writer = ResultsWriter(path)
    for lr, gain in ((0.01, 0.0), (0.05, 0.2)):
        for seed in range(4):
            for gate, f1 in (("topk", 0.5 + 0.01 * seed), ("dselect_k", 0.5 + 0.01 * seed + gain)):
                params = {"gate": gate, "framework": "torch", "seed": seed, "problem": "p", "lr": lr}
                writer.write(make_row("recovery", "sweep", params, "ok", f1=f1, test_mse=0.1))
    table = recovery_table(load_results(path).frame)
    assert len(table) == 4 and set(table["lr"]) == {0.01, 0.05}
    ds = table[table["gate"] == "dselect_k"].set_index("lr")
    assert ds.loc[0.01, "f1_diff"] == pytest.approx(0.0) and ds.loc[0.01, "f1_mark"] == "not significant"
    assert ds.loc[0.05, "f1_diff"] == pytest.approx(0.2) and ds.loc[0.05, "f1_mark"] == "better"
    assert (table["baseline differs"] == "").all()


# ---- the report directory
@pytest.fixture(scope="module")
def report_dir(fixture_file, tmp_path_factory):
    from reports.render import write_report

    out = tmp_path_factory.mktemp("report")
    write_report([fixture_file], out)
    return out


def test_report_files_and_content(report_dir):
    html = (report_dir / "index.html").read_text()
    md = (report_dir / "summary.md").read_text()
    # the dselect_k torch row of the small fwd shape, with its ratio, interval and mark
    line = next(row for row in md.splitlines() if row.startswith("| dselect_k | torch | eager | 1.967"))
    assert "2.000 [" in line and "| slower |" in line
    assert "| hard_concrete | torch | eager |" in md and "0.500 [" in md and "| faster |" in md
    assert "not significant" in md and "timing row without gate" in md
    assert "+0.300 (p=" in md and "better" in md  # recovery vs baseline
    assert html.count("<img ") == 6 and html.count("data:image/png;base64,") == 6
    assert "mark-slower" in html and "Provenance" in html and "src='http" not in html
    csv = pd.read_csv(report_dir / "results.csv")
    assert len(csv) == 3 * 2 * 6 + 2 + 15 and {"median_ms", "f1", "samples_ms"} <= set(csv.columns)
    table = pd.read_csv(report_dir / "timing_table.csv")
    assert set(table["mark"]) == {"baseline", "slower", "faster", "not significant"}


def test_report_cli(fixture_file, tmp_path):
    import typer
    from typer.testing import CliRunner

    from reports._cli import register

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["report", str(fixture_file), "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "r" / "index.html") in result.output and (tmp_path / "r" / "index.html").exists()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "nothing.jsonl"), "-o", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "no such file" in result.output and "loaded none" in result.output


def test_reports_import_loads_no_framework():
    code = (
        "import sys, reports, reports.load, reports.stats, reports.tables, reports.compare, reports.render, "
        "reports.plots, reports._cli; bad = [m for m in ('torch', 'tensorflow') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
