"""reports: loading, statistics and tables checked against a synthetic results file with known answers
(tests/fixtures/synthetic.py), and the report directory's content."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from reports import comparison, stats
from reports.load import SCHEMA, load_results
from reports.tables import recovery_table, timing_table
from tests.fixtures.synthetic import (
    DSELECT_F1_GAIN,
    N_SAMPLES,
    TOPK_F1,
    base_draws,
    recovery_rows,
    write_fixture,
)


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
                "schema": 1,
                "kind": "timing",
                "suite": "s",
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
    assert len(got.frame) == 0  # a row with an unusable value is reported and left out (not kept half-blank)
    assert any("absent.jsonl: no such file" in p for p in got.problems)
    assert any("r.jsonl:1" in p and "median_ms" in p and "expected a number" in p for p in got.problems)


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
    assert comparison.mark(2.0, stats.mann_whitney_p(2 * a, a)) == comparison.SLOWER
    assert comparison.mark(0.5, stats.mann_whitney_p(0.5 * a, a)) == comparison.FASTER
    assert stats.mann_whitney_p(a[::-1].copy(), a) == 1.0
    assert comparison.mark(1.0, 1.0) == comparison.SAME
    assert comparison.mark(1.05, 1e-9, factor=1.1) == comparison.SAME  # significant but within the factor
    assert comparison.mark(2.0, float("nan")) == comparison.UNKNOWN
    with pytest.raises(ValueError, match="factor"):
        comparison.mark(1.0, 0.5, factor=0.5)
    with pytest.raises(ValueError, match="level"):
        stats.bootstrap_ratio_ci(a, a, level=1.5)


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


def _paired(frame: pd.DataFrame, metric: str, gate: str, baseline: str = "topk") -> tuple[np.ndarray, np.ndarray]:
    """``metric`` of ``gate`` and of ``baseline`` per seed (the fixture's recovery rows, one framework), paired."""
    rec = frame[frame["kind"] == "recovery"]
    a = rec[rec["gate"] == gate].set_index("seed")[metric].sort_index()
    b = rec[rec["gate"] == baseline].set_index("seed")[metric]
    return a.to_numpy(dtype=float), b.loc[a.index].to_numpy(dtype=float)


def test_recovery_table_mean_se_and_wilcoxon(loaded):
    from scipy.stats import wilcoxon

    table = recovery_table(loaded.frame)
    ds = _case(table, gate="dselect_k")
    ds_f1, topk_f1 = _paired(loaded.frame, "f1", "dselect_k")
    np.testing.assert_allclose(topk_f1, TOPK_F1)
    np.testing.assert_allclose(ds_f1 - topk_f1, DSELECT_F1_GAIN)
    assert ds["seeds"] == 5
    assert ds["f1_mean"] == pytest.approx(np.mean(ds_f1))
    assert ds["f1_se"] == pytest.approx(np.std(ds_f1, ddof=1) / np.sqrt(5))
    assert ds["f1_diff"] == pytest.approx(np.median(DSELECT_F1_GAIN))  # median paired difference, 0.30
    # The two-sided Wilcoxon signed-rank test of the paired differences, as scipy computes it: all 5 positive, the
    # smallest p-value 5 pairs allow (2 / 2**5 = 0.0625), which is not below 0.05.
    assert ds["f1_p"] == wilcoxon(ds_f1 - topk_f1).pvalue == 2 / 2**5
    assert ds["f1_mark"] == "not significant"
    # support_changes: dselect_k settles (0) where topk keeps changing (3) on every seed: the same smallest p.
    ds_sc, topk_sc = _paired(loaded.frame, "support_changes", "dselect_k")
    assert ds["support_changes_diff"] == np.median(ds_sc - topk_sc) == -3.0
    assert ds["support_changes_p"] == wilcoxon(ds_sc - topk_sc).pvalue
    assert ds["support_changes_mark"] == "not significant"
    # The mark is "p < alpha" with the direction of the difference: above that smallest p the rows are marked.
    loose = _case(recovery_table(loaded.frame, alpha=0.1), gate="dselect_k")
    assert loose["f1_p"] == ds["f1_p"] and loose["f1_mark"] == "better"
    assert loose["support_changes_mark"] == "better"  # lower is better
    sm = _case(table, gate="softmax")
    assert sm["f1_diff"] == 0.0 and sm["f1_p"] == 1.0 and sm["f1_mark"] == "not significant"
    assert sm["baseline differs"] == "selection=nonzero" and ds["baseline differs"] == ""
    assert _case(table, gate="topk")["f1_mark"] == "baseline"
    assert np.isnan(_case(table, gate="topk")["f1_p"])


def test_recovery_table_matches_the_cli_summary(loaded):
    """On the same rows the report and the ``gatebench recover`` / ``run`` summary (``harness.recovery.report``)
    give the same mean, s.e., median difference and Wilcoxon p-value."""
    from harness.recovery.report import summarise_rows

    cli = {c["gate"]: c for c in summarise_rows(recovery_rows(), baseline="topk")["static_known"]["cells"]}
    table = recovery_table(loaded.frame)
    for gate in ("dselect_k", "softmax"):
        row, cell = _case(table, gate=gate), cli[gate]
        assert row["f1_p"] == cell["wilcoxon_f1_vs_topk"]["p_value"]
        assert row["f1_diff"] == cell["wilcoxon_f1_vs_topk"]["median_diff"]
        assert (row["f1_mean"], row["f1_se"]) == (cell["f1"]["mean"], cell["f1"]["se"])


def test_recovery_groups_by_every_case_parameter(tmp_path):
    """A sweep over a float knob (lr) gives one table row per value, each compared with Top-k at that value;
    8 seeds, so that a consistent difference can reach Wilcoxon's p = 2 / 2**8 < 0.05 and be marked."""
    from scipy.stats import wilcoxon

    from harness.results import ResultsWriter, make_row

    path = tmp_path / "sweep.jsonl"
    writer = ResultsWriter(path)
    seeds = range(8)
    gains = {0.01: np.zeros(8), 0.05: np.full(8, 0.2), 0.1: -0.1 - 0.01 * np.arange(8)}
    for lr, gain in gains.items():
        for seed in seeds:
            for gate, f1 in (("topk", 0.5 + 0.01 * seed), ("dselect_k", 0.5 + 0.01 * seed + gain[seed])):
                params = {"gate": gate, "framework": "torch", "seed": seed, "problem": "p", "lr": lr}
                writer.write(make_row("recovery", "sweep", params, "ok", f1=f1, test_mse=0.1))
    table = recovery_table(load_results(path).frame)
    assert len(table) == 6 and set(table["lr"]) == {0.01, 0.05, 0.1}
    ds = table[table["gate"] == "dselect_k"].set_index("lr")
    assert ds.loc[0.01, "f1_diff"] == pytest.approx(0.0) and ds.loc[0.01, "f1_p"] == 1.0
    assert ds.loc[0.01, "f1_mark"] == "not significant"
    for lr in (0.05, 0.1):
        diffs = np.array([0.5 + 0.01 * s + gains[lr][s] - (0.5 + 0.01 * s) for s in seeds])
        assert ds.loc[lr, "f1_diff"] == pytest.approx(np.median(gains[lr]))
        assert ds.loc[lr, "f1_p"] == wilcoxon(diffs).pvalue == 2 / 2**8
    assert ds.loc[0.05, "f1_mark"] == "better" and ds.loc[0.1, "f1_mark"] == "worse"
    assert (ds["test_mse_p"] == 1.0).all() and (ds["test_mse_mark"] == "not significant").all()
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
    assert "+0.300 (p=0.062, not significant)" in md  # recovery vs baseline: Wilcoxon, 5 seeds
    assert "Wilcoxon signed-rank p vs topk" in md and "t-test" not in md + html
    assert html.count("<img ") == 7 and html.count("data:image/png;base64,") == 7  # 6 figures + the headline cost
    assert "mark-slower" in html and "Provenance" in html and "src='http" not in html
    csv = pd.read_csv(report_dir / "results.csv")
    assert len(csv) == 3 * 2 * 6 + 2 + 15 and {"median_ms", "f1", "samples_ms"} <= set(csv.columns)
    table = pd.read_csv(report_dir / "timing_table.csv")
    assert set(table["mark"]) == {"baseline", "slower", "faster", "not significant"}


def test_report_cli(fixture_file, tmp_path):
    import typer
    from typer.testing import CliRunner

    from gatebench.cli.report import register

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["report", str(fixture_file), "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "r" / "index.html") in result.output and (tmp_path / "r" / "index.html").exists()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "nothing.jsonl"), "-o", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "no such file" in result.output and "loaded none" in result.output


def test_reports_import_loads_no_framework():
    code = (
        "import sys, reports, reports.load, reports.stats, reports.comparison, reports.tables, reports.compare, "
        "reports.render, reports.plots, reports.targets; "
        "bad = [m for m in ('torch', 'tensorflow') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
