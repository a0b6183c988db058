"""The report answers first: the headline section (sentences, figures, caveats), the figures of the smoke suite
with its experts sweep, merged runs that never pair across runs, and the regression history."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pandas as pd
import pytest

from harness.results import make_row
from harness.timer import summarize
from reports.headline import caveats
from reports.history import history_figure, load_history
from reports.load import load_results
from reports.render import assemble_report, html_text, markdown_text
from reports.tables import recovery_table, timing_table

SHAPE = {"device": "cpu", "dtype": "float32", "input_dim": 32, "batch": 64, "k": 4, "impl": "eager"}
SCALE = {"topk": 1.0, "softmax": 0.5, "dselect_k": 2.0}


def _samples(scale: float, n: int = 40, seed: int = 0) -> np.ndarray:
    return scale * np.exp(np.random.default_rng(seed).normal(0.0, 0.02, n))


def _timing_row(gate, framework, mode, gating, experts, scale, *, n=40, suite="smoke", seed=0, **over) -> dict:
    params = {**SHAPE, "gate": gate, "framework": framework, "mode": mode, "gating": gating, "experts": experts}
    if gating == "static":
        params.update(batch=None, input_dim=None)
    mem = 1000.0 * SCALE.get(gate, 1.0) if framework == "torch" else None
    row = make_row("timing", suite, params, "ok", peak_mem_bytes=mem, **summarize(_samples(scale, n, seed)))
    row.update(over)
    return row


def _smoke_rows(**kw) -> list[dict]:
    """The smoke suite's shape (every mode and gating at 16 experts) and the experts sweep (fwdbwd, 64, 256)."""
    rows = []
    for fw in ("torch", "tf"):
        for gate, scale in SCALE.items():
            for mode, ms in (("fwd", 1.0), ("bwd", 1.5), ("fwdbwd", 2.5)):
                for gating in ("static", "per_example"):
                    rows.append(_timing_row(gate, fw, mode, gating, 16, 0.1 * scale * ms, **kw))
            for experts in (64, 256):
                rows.append(_timing_row(gate, fw, "fwdbwd", "per_example", experts,
                                        0.1 * scale * 2.5 * (experts / 16) ** 0.5, **kw))
    return rows


def _recovery_rows(seeds: int) -> list[dict]:
    rows = []
    for fw in ("torch", "tf"):
        for gate, gain in (("topk", 0.0), ("dselect_k", 0.2)):
            for seed in range(seeds):
                params = {"gate": gate, "framework": fw, "problem": "p", "experts": 8, "k": 2, "seed": seed}
                rows.append(make_row("recovery", "recovery_smoke", params, "ok", f1=0.6 + gain + 0.01 * seed,
                                     support_changes=1.0, test_mse=0.1))
    return rows


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def smoke_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smoke")
    return [_write(folder / "smoke.jsonl", _smoke_rows()), _write(folder / "recovery.jsonl", _recovery_rows(3))]


@pytest.fixture(scope="module")
def report(smoke_files):
    return assemble_report(load_results(smoke_files), sources=smoke_files)


def test_headline_comes_first_and_names_each_gate_ratio(report):
    page = html_text(report)
    start = page.index("<section id='headline'>")
    assert start < page.index("<table"), "the headline must come before any table"
    head = page[start: page.index("</section>", start)]
    assert "<table" not in head
    for fw in ("PyTorch on CPU", "TensorFlow on CPU"):
        assert fw in head
    assert "softmax takes 0.50x the time (95% CI" in head and "dselect_k takes 2.00x the time (95% CI" in head
    assert "memory 2.00x" in head and "memory 0.50x" in head  # PyTorch only: TF has no peak memory on the CPU
    assert "forward + backward, per-example" in head
    assert "dselect_k F1 0.81" in head and "Wilcoxon p = 0.25" in head
    assert "id='fig-headline_cost'" in head and "id='fig-recovery_f1'" in head
    md = markdown_text(report)
    assert md.splitlines()[2] == "- " + report.headline.cost[0]
    assert md.index(report.headline.recovery[0]) < md.index("## Timing")


def test_smoke_with_the_experts_sweep_draws_every_figure(report):
    names = {f.name for f in report.figures} | {f.name for f in report.headline.figures}
    assert {"time_vs_experts", "forward_backward", "torch_vs_tf", "recovery_f1", "headline_cost"} <= names
    assert "time_vs_experts" not in " ".join(report.skipped)
    for fig in [*report.figures, *report.headline.figures]:
        assert fig.png[:8] == b"\x89PNG\r\n\x1a\n"
    by_name = {f.name: f for f in report.figures}
    assert "interquartile" in by_name["forward_backward"].caption  # the spread of the raw samples is drawn
    # 150 dpi: the experts figure is wider than it would be at the old 90 dpi
    assert int.from_bytes(by_name["time_vs_experts"].png[16:20], "big") > 1000


def test_tables_show_n_iqr_and_one_memory_unit(report):
    page = re.sub(r"base64,[^']*", "", html_text(report))
    assert "<th>n</th>" in page and "<th>IQR</th>" in page and "peak KiB" in page and "MiB" not in page
    assert "<th>F1</th>" in page and len(report.recovery_compact.columns) <= 9


def test_caveats_appear_only_when_their_condition_holds(report, smoke_files, tmp_path):
    said = " ".join(report.headline.caveats)
    assert "with 3 seeds the smallest two-sided Wilcoxon p is 0.25" in said
    for absent in ("fewer than 20 samples", "noisy", "Mixed provenance", "Several runs merged", "repeat"):
        assert absent not in said, absent
    rows = _smoke_rows(n=10)
    for row in rows[:3]:
        row["provenance"] = {**row["provenance"], "machine": "other-box"}
    rows[5]["iqr_ms"] = rows[5]["median_ms"]  # an IQR of 100%: noisy
    frame = load_results([_write(tmp_path / "a.jsonl", rows), _write(tmp_path / "r.jsonl", _recovery_rows(6))]).frame
    frame = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)  # one case twice in one run (the loader
    # keeps a JSONL file's newest row per case; other inputs may not)
    said = " ".join(caveats(frame, timing_table(frame), recovery_table(frame)))
    assert "fewer than 20 samples (the fewest: 10)" in said
    assert "noisy side" in said and "Mixed provenance" in said and "other-box" in said
    assert "repeat within a run" in said
    assert "Wilcoxon" not in said  # 6 seeds can reach p < 0.05


def test_merged_runs_never_pair_a_baseline_across_runs(tmp_path):
    slow = _smoke_rows()  # another run of the same suite, everything 100x slower
    fast = copy.deepcopy(slow)
    for row in slow:
        row["samples_ms"] = [v * 100 for v in row["samples_ms"]]
        row.update(summarize(np.asarray(row["samples_ms"])))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    files = [_write(tmp_path / "a" / "smoke.jsonl", fast), _write(tmp_path / "b" / "smoke.jsonl", slow)]
    loaded = load_results([str(tmp_path)])
    table = timing_table(loaded.frame)
    assert set(table["run"]) == {"a/smoke.jsonl", "b/smoke.jsonl"}
    assert len(table) == 2 * len(fast)
    ratios = table.loc[table["gate"] == "dselect_k", "ratio"]
    assert np.allclose(ratios, 2.0, rtol=0.05), ratios  # never 200x or 0.02x: each run has its own topk
    data = assemble_report(loaded, sources=files)
    assert "Several runs merged: suite smoke has rows from 2 runs" in " ".join(data.headline.caveats)
    assert all("run" in t.columns for _, t in data.timing_sections)


def _asv_results(folder, commits: list[tuple[str, float]]) -> None:
    machine = folder / "box"
    machine.mkdir(parents=True)
    (machine / "machine.json").write_text(json.dumps({"machine": "box", "version": 1}))
    (folder / "benchmarks.json").write_text(json.dumps({"bench_gates.TimeGate.time_call": {"unit": "seconds"},
                                                         "version": 2}))
    for i, (sha, value) in enumerate(commits):
        doc = {"commit_hash": sha * 5, "env_name": "existing-py", "date": 1000 * i, "params": {}, "python": "3.11",
               "requirements": {}, "env_vars": {}, "version": 2,
               "result_columns": ["result", "params", "version", "started_at", "duration", "stats_ci_99_a",
                                  "stats_ci_99_b", "stats_q_25", "stats_q_75"],
               "results": {"bench_gates.TimeGate.time_call": [[value, None], [["'topk'"], ["'torch'", "'tf'"]],
                                                               "v", 0, 1.0, None, None, [value * 0.9, None],
                                                               [value * 1.1, None]]}}
        (machine / f"{sha * 5}-existing-py.json").write_text(json.dumps(doc))


def test_history_from_asv_results_and_from_several_commits(tmp_path):
    _asv_results(tmp_path / "asv", [("aaaaaaaa", 0.001), ("bbbbbbbb", 0.002)])
    history = load_history([tmp_path / "asv"])
    assert list(history["benchmark"].unique()) == ["bench_gates.TimeGate.time_call(topk, torch)"]
    assert list(history["commit"].astype(str)) == ["aaaaaaaa", "bbbbbbbb"]
    assert np.allclose(history["value"], [1.0, 2.0]) and np.allclose(history["high"], [1.1, 2.2])
    assert (history["unit"] == "ms").all()
    assert history_figure(history) is not None
    # gatebench results of two commits: the report draws the history by itself
    paths = []
    for commit, scale in (("1111111", 1.0), ("2222222", 3.0)):
        rows = _smoke_rows()
        for row in rows:
            row["provenance"] = {**row["provenance"], "commit": commit * 5}
            row["median_ms"] *= scale
        paths.append(_write(tmp_path / f"run-{commit}.jsonl", rows))
    data = assemble_report(load_results(paths), sources=paths)
    assert data.history is not None and "id='history'" in html_text(data)
    with pytest.raises(ValueError, match="history: expected"):
        load_history([tmp_path / "absent"])


def test_report_without_rows_of_a_kind_says_so(tmp_path):
    path = _write(tmp_path / "r.jsonl", _recovery_rows(3))
    data = assemble_report(load_results([path]), sources=[path])
    assert data.headline.cost == [] and len(data.headline.recovery) == 2
    assert isinstance(data.timing, pd.DataFrame) and "<section id='headline'>" in html_text(data)
