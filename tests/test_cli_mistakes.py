"""The command line catches a newcomer's mistakes before anything runs: each test asserts the exit code and the
message (``gatebench run``, ``report``, ``recover``, ``list``, ``--version``). No framework is loaded here: the
GPU check is given a fake adapter."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

import gates
from gatebench import plain
from gatebench.cli import app

ROOT = Path(__file__).resolve().parent.parent


def _invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result, " ".join(result.output.split())


@pytest.mark.parametrize(("flag", "value", "known", "close"), [
    ("--gate", "dselectk", "dselect_k, entmax15", "did you mean 'dselect_k'?"),
    ("--framework", "pytorch", "tf, torch", "did you mean 'torch'?"),
    ("--mode", "forward", "bwd, fwd, fwdbwd", "did you mean 'fwd'?"),
    ("--experts", "999", "16, 64, 256", None),
])
def test_an_unknown_filter_value_exits_2_listing_the_suites_values(tmp_path, flag, value, known, close):
    result, text = _invoke("run", "smoke", "--out", str(tmp_path / "out"), flag, value)
    assert result.exit_code == 2, result.output
    assert f"error: {flag}: expected one of {known}" in text and f"got '{value}'" in text
    assert (close in text) if close else "did you mean" not in text
    assert not (tmp_path / "out").exists()


def test_device_gpu_in_a_suite_without_gpu_cases_is_an_unknown_value(tmp_path):
    result, text = _invoke("run", "smoke", "--out", str(tmp_path / "out"), "--device", "gpu")
    assert result.exit_code == 2
    assert "error: --device: expected one of cpu (the device values of suite 'smoke'); got 'gpu'" in text
    assert "did you mean" not in text


def test_filters_that_select_nothing_exit_2(tmp_path):
    result, text = _invoke("run", "smoke", "--out", str(tmp_path / "out"), "--gate", "topk", "--gating", "static",
                           "--experts", "256")
    assert result.exit_code == 2
    assert ("error: filters: expected at least one case; got none of the 108 cases of suite 'smoke' with --gate topk "
            "--gating static --experts 256") in text
    assert not (tmp_path / "out").exists()


def test_a_filter_the_cases_do_not_have_exits_2(tmp_path):
    result, text = _invoke("run", "recovery_smoke", "--out", str(tmp_path / "out"), "--device", "gpu")
    assert result.exit_code == 2
    assert "error: --device: expected a filter the cases of recovery suite 'recovery_smoke' have (--gate" in text


class _NoGpu:
    def check_device(self, device: str) -> None:
        from harness.adapters import Unavailable

        raise Unavailable("no CUDA device visible to PyTorch (torch.cuda.is_available() is False)")


def test_device_gpu_without_a_gpu_fails_before_anything_runs(tmp_path, monkeypatch):
    import harness.adapters

    asked = []
    monkeypatch.setattr(harness.adapters, "get_adapter", lambda fw: asked.append(fw) or _NoGpu())
    result, text = _invoke("run", "kernels", "--out", str(tmp_path / "out"), "--device", "gpu", "--framework",
                           "torch")
    assert result.exit_code == 2, result.output
    assert asked == ["torch"]  # only the frameworks selected
    assert "loading PyTorch ..." in text
    assert ("error: --device gpu: expected a GPU PyTorch can use; got none here (no CUDA device visible to PyTorch "
            "(torch.cuda.is_available() is False))") in text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--resume", "--fresh"], "error: --fresh: expected either --resume (continue the results file) or --fresh"),
    (["--retry-skipped"], "error: --retry-skipped: expected --resume with it"),
    (["--case-timeout", "5"], "expected --isolate with it"),
])
def test_contradictory_flags_exit_2(tmp_path, flags, message):
    result, text = _invoke("run", "smoke", "--out", str(tmp_path / "out"), *flags)
    assert result.exit_code == 2, result.output
    assert message in text


def test_suite_errors_are_labelled_suite_errors_with_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nkind = "recovery"\ngates = ["nope"]\n')
    result, text = _invoke("run", str(bad), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "error: suite error: gates: expected a non-empty list drawn from" in text and "bad.toml" in text
    assert "--out" not in text
    odd = tmp_path / "odd.toml"
    odd.write_text('name = "odd"\nkind = "timings"\n')
    result, text = _invoke("run", str(odd))
    assert result.exit_code == 2
    assert "error: suite error: kind: expected one of timing, recovery, prediction; got 'timings'" in text
    assert "odd.toml" in text


def test_a_settings_override_error_names_the_flag(tmp_path):
    result, text = _invoke("run", "smoke", "--out", str(tmp_path / "out"), "--rounds", "0")
    assert result.exit_code == 2
    assert "error: --rounds: settings.rounds: expected an integer >= 1; got 0" in text


def test_an_existing_results_file_is_an_out_error(tmp_path):
    out = tmp_path / "smoke.jsonl"
    out.write_text("{}\n")
    result, text = _invoke("run", "smoke", "--out", str(out), "--gate", "topk")
    assert result.exit_code == 2
    assert f"error: out: {out} already has rows; pass resume" in text


def test_dry_run_prints_the_selected_cases_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    result, text = _invoke("run", "smoke", "--out", str(out), "--gate", "topk", "--framework", "torch", "--mode",
                           "fwd", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "smoke: 2 of 108 case(s) selected (dry run: nothing run, nothing written)" in text
    assert "gating" in text and "per_example" in text and "all: device=cpu, impl=eager" in text
    assert not out.exists() and not list(tmp_path.rglob("*.lock"))


def test_dry_run_of_a_recovery_suite(tmp_path):
    result, text = _invoke("run", "recovery_smoke", "--out", str(tmp_path), "--gate", "topk", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "recovery_smoke: 6 of 24 case(s) selected" in text and "seed" in text
    assert list(tmp_path.iterdir()) == []


def test_plain_runner_catches_the_same_mistakes(tmp_path, capsys):
    assert plain.main(["run", "smoke", "--out", str(tmp_path), "--gate", "dselectk"]) == 2
    assert "did you mean 'dselect_k'?" in capsys.readouterr().err
    assert plain.main(["run", "smoke", "--out", str(tmp_path), "--resume", "--fresh"]) == 2
    assert "error: --fresh: expected either --resume" in capsys.readouterr().err
    assert plain.main(["run", "tuning_smoke", "--out", str(tmp_path)]) == 2
    assert "a tuning suite: run it with gatebench tune --suite" in capsys.readouterr().err
    assert plain.main(["run", "smoke", "--out", str(tmp_path), "--gate", "topk", "--mode", "fwd", "--framework",
                       "tf", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "smoke: 2 of 108 case(s) selected" in printed and "gate=topk framework=tf" in printed
    assert list(tmp_path.iterdir()) == []


def test_report_rejects_an_unknown_baseline_listing_the_gates(tmp_path):
    result, text = _invoke("report", str(ROOT / "docs" / "results" / "recovery.jsonl"), "-o", str(tmp_path / "r"),
                           "--baseline", "topkk")
    assert result.exit_code == 2, result.output
    assert "error: baseline: expected a gate of the loaded rows (" in text and "dselect_k" in text
    assert "got 'topkk' (did you mean 'topk'?)" in text
    assert not (tmp_path / "r").exists()


def test_report_defaults_to_report_beside_the_first_results_file(tmp_path):
    from gatebench.cli.report import default_out

    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(ROOT / "docs" / "results" / "recovery.jsonl", results / "recovery.jsonl")
    assert default_out([results / "recovery.jsonl"]) == results / "report"
    assert default_out([results]) == results / "report"
    result, text = _invoke("report", str(results / "recovery.jsonl"), "--baseline", "bogus")
    assert result.exit_code == 2
    assert f"writing the report to {results / 'report'} (-o DIR for another folder)" in text


def test_run_on_a_tuning_suite_points_to_gatebench_tune():
    result, text = _invoke("run", "tuning_smoke")
    assert result.exit_code == 2
    assert "is a tuning suite: run it with gatebench tune --suite" in text and "tuning_smoke.toml" in text


def test_list_shows_tuning_suites_as_tuning_suites():
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "tuning_smoke" in line]
    assert lines and "tuning" in lines[0].split("│")[2] and "[red]" not in result.output
    assert "gatebench tune --suite" in result.output


def test_version_prints_the_package_version(monkeypatch):
    from importlib import metadata

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("gatebench ")

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert plain.version().endswith(" (source tree)")
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert plain.version() == f"{declared} (source tree)"


def test_recover_help_lists_every_gate():
    result = CliRunner().invoke(app, ["recover", "--help"], terminal_width=400)
    text = " ".join(result.output.split())
    assert result.exit_code == 0
    for gate in gates.GATE_NAMES:
        assert gate in text


@pytest.mark.parametrize(("flags", "message"), [
    (["--suite", "suites/recovery_smoke.toml", "--out", "x.jsonl", "--resume", "--fresh"],
     "error: --fresh: expected either --resume (continue --out) or --fresh"),
    (["--resume"], "error: --resume: expected --suite with it"),
])
def test_recover_rejects_contradictory_flags(flags, message):
    result, text = _invoke("recover", *flags)
    assert result.exit_code == 2
    assert message in text


def test_loading_lines_come_once_per_framework_before_its_first_case():
    lines: list[str] = []
    announce = plain.Announcer(lines.append)
    seen = []

    class Inner:
        def map(self, items):
            for item in items:
                seen.append((item.params["framework"], list(lines)))
                yield item, {}

    tasks = [SimpleNamespace(params={"framework": fw}) for fw in ("torch", "torch", "tf", "torch")]
    list(plain.AnnouncingExecutor(Inner(), announce).map(tasks))
    assert lines == ["loading PyTorch ...", "loading TensorFlow ..."]
    assert seen[0] == ("torch", ["loading PyTorch ..."])  # printed before the first torch case runs
    assert seen[1][1] == ["loading PyTorch ..."] and seen[2][1] == lines
    group = SimpleNamespace(tasks=(SimpleNamespace(params={"framework": "tf"}),))
    other: list[str] = []
    list(plain.AnnouncingExecutor(SimpleNamespace(map=lambda items: iter(list(items))), plain.Announcer(other.append))
         .map([group]))
    assert other == ["loading TensorFlow ..."]


def test_recovery_progress_label_names_gate_framework_problem_seed():
    from gatebench.cli.run import _short

    row = {"kind": "recovery", "gate": "dselect_k", "framework": "tf", "problem": "static16", "seed": 3,
           "case_id": "x" * 200}
    assert _short(row) == "dselect_k / tf / static16 / seed 3"
