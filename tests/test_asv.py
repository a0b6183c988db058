"""asv: the benchmarks generated from the suites run (``asv run --quick`` on the smoke subset), and
``scripts/asv_commits.sh`` over two commits followed by ``asv compare`` flags a slowdown planted in the second.

Everything happens in a temporary clone (the working tree's project files copied over it and committed), with
HOME pointing to a temporary directory (asv keeps its machine file there): the real repository is untouched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.env import quiet_frameworks

ROOT = Path(__file__).resolve().parents[1]
ASV = Path(sys.executable).with_name("asv")
PROJECT_PATHS = ("gates", "harness", "suites", "benchmarks", "asv.conf.json", "scripts/asv_commits.sh")
# The smoke subset: two gates, PyTorch only, forward, 16 experts (TF's start-up would double the time).
SMOKE_FILTER = "framework=torch;mode=fwd;experts=16;gate=topk|dselect_k"
MACHINE = "gatebench-test"

# Planted in the second commit: every Top-k forward sleeps 100 ms more (far above this shared machine's noise).
SLOWDOWN = """

_original_topk_weights = topk_weights


def topk_weights(logits, k):  # noqa: F811 - a planted regression for tests/test_asv.py
    import time

    time.sleep(0.1)
    return _original_topk_weights(logits, k)
"""

pytestmark = pytest.mark.skipif(not ASV.exists() or shutil.which("git") is None, reason="needs asv and git")


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("home")
    env = quiet_frameworks(dict(
        os.environ,
        HOME=str(home),
        GATEBENCH_ASV_FILTER=SMOKE_FILTER,
        ASV=str(ASV),
        ASV_MACHINE=MACHINE,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
    ))
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module")
def repo(tmp_path_factory, env) -> Path:
    """A clone of this repository with the working tree's project files committed on top (commit A)."""
    repo = tmp_path_factory.mktemp("asv") / "repo"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(repo)], check=True, env=env)
    for rel in PROJECT_PATHS:
        src, dst = ROOT / rel, repo / rel
        if src.is_dir():
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    subprocess.run(["git", "-C", str(repo), "add", "-A", *PROJECT_PATHS], check=True, env=env)
    subprocess.run(
        ["git", "-C", str(repo), "commit", "--quiet", "--allow-empty", "-m", "A: working tree"],
        check=True,
        env=env,
    )
    return repo


def test_asv_quick_run_of_the_smoke_benchmarks_passes(repo, env):
    subprocess.run(
        [str(ASV), "machine", "--yes", "--machine", MACHINE],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
    )
    run = subprocess.run(
        [
            str(ASV),
            "run",
            "--quick",
            "--python=same",
            "--machine",
            MACHINE,
            "--launch-method",
            "forkserver",
            "--show-stderr",
        ],
        cwd=repo,
        env={**env, "ASV_PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    for name in (
        "TimeGate.time_call",
        "TimeGate.track_harness_median_ms",
        "PeakMemory.track_peak_mem_bytes",
        "RecoveryF1.track_f1",
    ):
        assert re.search(rf"{re.escape(name)}\s+ok", out), f"{name} did not pass:\n{out[-4000:]}"
    assert "failed" not in out.lower(), out[-4000:]


def test_asv_over_two_commits_then_compare_flags_the_planted_slowdown(repo, env):
    torch_gates = repo / "gates" / "torch.py"
    torch_gates.write_text(torch_gates.read_text() + SLOWDOWN)
    subprocess.run(
        ["git", "-C", str(repo), "commit", "--quiet", "-am", "B: slower topk"], check=True, env=env
    )
    old, new = _git(repo, "rev-parse", "HEAD~1"), _git(repo, "rev-parse", "HEAD")

    run = subprocess.run(
        [
            "bash",
            "scripts/asv_commits.sh",
            "2",
            "--bench",
            "TimeGate.time_call",
            "-a",
            "repeat=7",
            "-a",
            "warmup_time=0.05",
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert (repo / ".asv" / "html" / "index.html").exists(), out[-2000:]
    results = list((repo / ".asv" / "results" / MACHINE).glob("*.json"))
    assert {p.name[:8] for p in results} >= {old[:8], new[:8]}, results
    assert _git(repo, "worktree", "list").count("\n") == 0  # the script removed its worktrees

    cmp = subprocess.run(
        [str(ASV), "compare", "--machine", MACHINE, "--factor", "3", "--split", old, new],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = cmp.stdout + cmp.stderr
    assert cmp.returncode == 0, text
    # asv compare's table rows: "| Change | Before | After | Ratio | Benchmark (Parameter) |"; "+" = worse.
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.lstrip().startswith("|") and "time_call" in line
    ]
    assert len(rows) == 2, text
    worse = [row[-1] for row in rows if row[0] == "+"]
    assert len(worse) == 1 and "'topk'" in worse[0], text
    assert "Benchmarks that have got worse" in text, text
    assert not any("'dselect_k'" in line for line in worse), text
