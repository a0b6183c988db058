"""The digits prediction benchmark wired into the runner (``gatebench run``, trials = 0), ``gatebench predict``
and the report (table, figure, headline sentence)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = {"name": "ptiny", "kind": "prediction", "gates": ["softmax", "topk"], "frameworks": ["torch"],
        "trials": 0, "heldout_seeds": 1,
        "problem": {"name": "digits2", "train": 300, "val": 100, "test": 100, "steps": 10, "eval_every": 5}}


def _toml(raw: dict, path: Path) -> Path:
    lines = []
    for key, value in raw.items():
        if key != "problem":
            lines.append(f"{key} = {json.dumps(value)}")
    lines.append("[problem]")
    lines += [f"{key} = {json.dumps(value)}" for key, value in raw["problem"].items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_suite_expands_an_untuned_prediction_suite():
    from harness.suite import load_suite

    suite = load_suite(TINY)
    assert suite.kind == "prediction" and suite.settings is None
    assert [(c["gate"], c["split"], c["seed"]) for c in suite.cases] == [("softmax", "test", 1000),
                                                                         ("topk", "test", 1000)]


def test_load_suite_refuses_a_tuned_prediction_suite():
    from harness.suite import load_suite

    with pytest.raises(ValueError, match="a tuned prediction suite: run it with gatebench predict"):
        load_suite(ROOT / "suites" / "prediction_smoke.toml")


def test_run_suite_writes_prediction_rows_and_resumes(tmp_path):
    from harness.results import read_rows
    from harness.runner import run_suite

    first = run_suite(TINY, tmp_path)
    assert [r["status"] for r in first.rows] == ["ok", "ok"], [r.get("error") for r in first.rows]
    assert all(r["kind"] == "prediction" and r["acc_mean"] is not None for r in first.rows)
    again = run_suite(TINY, tmp_path, resume=True)
    assert again.resumed == 2 and again.rows == []
    assert len(read_rows(first.path).rows) == 2


def test_gatebench_run_refuses_a_tuned_prediction_suite(tmp_path):
    from typer.testing import CliRunner

    from gatebench.cli import app

    path = _toml({**TINY, "trials": 1}, tmp_path / "tuned.toml")
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "gatebench predict" in result.output


def test_gatebench_predict_runs_the_protocol_and_prints_the_table(tmp_path):
    from typer.testing import CliRunner

    from gatebench.cli import app

    path = _toml({**TINY, "trials": 1}, tmp_path / "tuned.toml")
    verdicts = tmp_path / "v.json"
    result = CliRunner().invoke(app, ["predict", str(path), "--out", str(tmp_path / "out"), "--json",
                                      str(verdicts)])
    assert result.exit_code == 0, result.output
    assert "| gate | framework | gating | best trial |" in result.output
    assert "| topk | torch | static |" in result.output
    assert json.loads(verdicts.read_text())["suite"] == "ptiny"
    assert (tmp_path / "out" / "ptiny.torch.static.jsonl").is_file()
    again = CliRunner().invoke(app, ["predict", str(path), "--out", str(tmp_path / "out")])
    assert again.exit_code == 2 and "already has rows" in again.output
    bad = CliRunner().invoke(app, ["predict", str(path), "--out", str(tmp_path / "o2"), "--framework", "jax"])
    assert bad.exit_code == 2 and "--framework" in bad.output


def _committed_frame():
    from reports.load import to_frame

    rows = [json.loads(line) for name in ("prediction_default.torch.static.jsonl",
                                          "prediction_default.tf.static.jsonl")
            for line in (ROOT / "docs" / "results" / name).read_text().splitlines()]
    frame, problems = to_frame(rows)
    assert not problems
    return frame


def test_report_of_committed_prediction_rows():
    from reports.load import Loaded
    from reports.render import assemble_report, html_text, markdown_text

    data = assemble_report(Loaded(_committed_frame()))
    table = data.prediction.set_index(["framework", "gate"])
    assert table.loc[("torch", "dselect_k"), "seeds"] == 10
    assert table.loc[("torch", "dselect_k"), "acc_mean_mean"] == pytest.approx(0.877, abs=5e-4)
    assert table.loc[("tf", "hard_concrete"), "acc_p_holm"] == pytest.approx(0.0117, abs=1e-4)
    assert table.loc[("tf", "hard_concrete"), "acc_mark"] == "worse"
    assert table.loc[("torch", "topk"), "acc_mark"] == "baseline"
    assert len(data.headline.prediction) == 2
    assert all("test accuracy of each gate against topk" in s for s in data.headline.prediction)
    assert [f.name for f in data.headline.figures] == ["prediction_accuracy"]
    assert "acc vs topk (Holm)" in markdown_text(data)
    assert "id='fig-prediction_accuracy'" in html_text(data)


def test_prediction_headline_caveat_with_few_seeds():
    from reports.headline import build_headline
    from reports.tables import prediction_table, recovery_table, timing_table

    frame = _committed_frame()
    few = frame[frame["seed"].isin([1000, 1001, 1002]) | (frame["split"] != "test")]
    pred = prediction_table(few)
    assert set(pred["seeds"]) == {3}
    head = build_headline(few, timing_table(few), recovery_table(few), "topk", prediction=pred)
    assert any("Too few held-out seeds" in c for c in head.caveats)
