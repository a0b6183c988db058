"""The timing method against background load, end to end on a few cases (a gross regression of the method fails;
the bound is generous so that CI on a shared machine does not flake): gate/Top-k ratios measured quiet and under
one busy process per core stay within 2x of each other, and ``compare`` passes two back-to-back runs of the same
code. ``python -m scripts.noise_drift`` measures the same on the whole smoke suite (docs/performance.md)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest

from harness.env import quiet_frameworks
from harness.machine import usable_cores
from harness.results import row_json
from harness.suite import TimingSettings
from harness.tasks import Task, execute_group
from reports.rounds import per_round_ratio

pytestmark = [pytest.mark.slow, pytest.mark.torch]

SETTINGS = TimingSettings(warmup_ms=5.0, rep_ms=60.0, min_reps=5, rounds=8, memory=False)
GATES = ("topk", "softmax", "dselect_k", "hard_concrete")
BURNER = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end:\n    pass\n"


def _group() -> list[Task]:
    base = dict(framework="torch", device="cpu", impl="eager", mode="fwdbwd", gating="per_example", batch=64,
                input_dim=32, experts=16, k=4, dtype="float32")
    return [Task("timing", "noise", SETTINGS, {**base, "gate": gate}) for gate in GATES]


def _ratios(rows: list[dict]) -> dict[str, float]:
    by_gate = {row["gate"]: row for row in rows}
    assert all(row["status"] == "ok" for row in rows), [row.get("error") for row in rows]
    top = by_gate["topk"]
    return {gate: per_round_ratio(row["samples_ms"], row["sample_rounds"], top["samples_ms"],
                                  top["sample_rounds"]).ratio
            for gate, row in by_gate.items() if gate != "topk"}


@contextlib.contextmanager
def _burners(count: int):
    procs = [subprocess.Popen([sys.executable, "-c", BURNER]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_ratios_hold_under_background_load_and_compare_passes_unchanged_code(gt, tmp_path):
    quiet = execute_group(_group())
    with _burners(usable_cores()):
        loaded = execute_group(_group())
        again = execute_group(_group())
    q, lo = _ratios(quiet), _ratios(loaded)
    drifts = {gate: max(q[gate], lo[gate]) / min(q[gate], lo[gate]) for gate in q}
    print("ratios quiet", q, "loaded", lo, "drift", drifts)
    assert max(drifts.values()) <= 2.0, (q, lo, drifts)
    assert all(row["threads"] == 1 for row in loaded)

    paths = []
    for name, rows in (("a", loaded), ("b", again)):
        paths.append(tmp_path / f"{name}.jsonl")
        paths[-1].write_text("".join(row_json(row) + "\n" for row in rows))
    proc = subprocess.run([sys.executable, "-m", "gatebench", "compare", *map(str, paths), "--factor", "1.3"],
                          capture_output=True, text=True, env=quiet_frameworks(dict(os.environ)), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
