"""``gatebench run --jobs / --executor / --address`` end to end: the flags reach the executor, bad values are
exit-2 errors naming the flag, and a --jobs run gives the serial run's metrics."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gatebench.cli import app
from harness.results import read_rows
from harness.schema import RECOVERY_METRICS
from tests.test_parallel import _suite


@pytest.mark.parametrize(("args", "word"), [(["--jobs", "0"], "jobs"), (["--executor", "dask"], "executor"),
                                            (["--address", "auto"], "address")])
def test_bad_placement_flags_are_exit_2_naming_the_flag(tmp_path, args, word):
    result = CliRunner().invoke(app, ["run", str(_suite(tmp_path)), "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2, result.output
    assert word in result.output
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


@pytest.mark.torch
def test_jobs_2_from_the_command_line_gives_the_serial_metrics(gt, tmp_path):
    suite = str(_suite(tmp_path, seeds=2))
    for name, extra in (("serial", []), ("jobs", ["--jobs", "2"])):
        result = CliRunner().invoke(app, ["run", suite, "--out", str(tmp_path / f"{name}.jsonl"), *extra])
        assert result.exit_code == 0, result.output
    rows = {name: read_rows(tmp_path / f"{name}.jsonl").rows for name in ("serial", "jobs")}

    def metrics(side):
        return {r["case_id"]: json.dumps({k: r.get(k) for k in RECOVERY_METRICS}) for r in rows[side]}

    assert metrics("jobs") == metrics("serial") and len(rows["jobs"]) == 4
    assert {r["provenance"]["executor"] for r in rows["jobs"]} == {"local-pool"}
