"""Machine state and framework threads (harness.machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.machine import (
    THREAD_ENV_VARS,
    load_average,
    machine_state,
    pinned_threads,
    set_threads,
    thread_env,
    threads_in_use,
    usable_cores,
)

ROOT = Path(__file__).resolve().parent.parent


def test_machine_state():
    cores = usable_cores()
    assert isinstance(cores, int) and 1 <= cores <= (os.cpu_count() or cores)
    load = load_average()
    assert load is None or (isinstance(load, float) and load >= 0)
    state = machine_state()
    assert set(state) == {"load_1m", "usable_cores"} and state["usable_cores"] == cores


def test_thread_env():
    env = thread_env(2)
    assert set(env) == set(THREAD_ENV_VARS) >= {"OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"}
    assert set(env.values()) == {"2"}


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_threads_are_validated(bad):
    with pytest.raises(ValueError, match="threads: expected an int >= 1; got"):
        thread_env(bad)
    with pytest.raises(ValueError, match="threads: expected an int >= 1; got"):
        set_threads("torch", bad)


def test_framework_is_validated():
    with pytest.raises(ValueError, match="framework: expected one of 'torch', 'tf'; got 'jax'"):
        set_threads("jax", 1)


def test_torch_threads_pinned_and_restored():
    torch = pytest.importorskip("torch")
    start = torch.get_num_threads()
    other = 1 if start != 1 else 2
    with pinned_threads("torch", other) as inside:
        assert torch.get_num_threads() == other and inside["intra_op"] == other
        assert threads_in_use("torch")["framework"] == "torch"
    assert torch.get_num_threads() == start
    with pytest.raises(KeyError), pinned_threads("torch", other):
        raise KeyError("restored on errors too")
    assert torch.get_num_threads() == start
    previous = set_threads("torch", other)
    try:
        assert previous["intra_op"] == start and torch.get_num_threads() == other
    finally:
        torch.set_num_threads(start)


_TF_CODE = """
import json
from harness.machine import ThreadsPinnedError, pinned_threads, set_threads, threads_in_use
with pinned_threads("tf", 1) as inside:
    import tensorflow as tf
    (tf.constant([1.0]) + 1.0).numpy()  # initialises TensorFlow with the pinned pools
out = {"inside": inside, "after": threads_in_use("tf")}
set_threads("tf", 1)  # the values in force: fine after initialisation
try:
    set_threads("tf", 2)
    out["error"] = None
except ThreadsPinnedError as exc:
    out["error"] = str(exc)
print(json.dumps(out))
"""


def test_tf_threads_pinned_before_initialisation():
    pytest.importorskip("tensorflow")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    for name in THREAD_ENV_VARS:
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-c", _TF_CODE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["inside"] == {"framework": "tf", "intra_op": 1, "inter_op": 1}
    assert out["after"] == out["inside"]
    assert out["error"] and "--isolate" in out["error"] and "thread_env(2)" in out["error"]


def test_new_modules_import_no_framework():
    code = (
        "import sys, harness.machine, harness.rounds, reports.rounds\n"
        "bad = [m for m in ('torch', 'tensorflow') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
