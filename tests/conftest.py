"""Shared test set-up: quiet TensorFlow, deterministic numerics, framework fixtures that skip with a reason."""

from __future__ import annotations

import os

from harness.env import quiet_frameworks

quiet_frameworks()  # before anything imports TensorFlow
# One TF intra/inter-op thread, as timing cases pin (the suites' default `threads = 1`): TensorFlow reads these when
# it initialises, so a case run in this process after another test has initialised TF still gets what it asks for.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Property tests draw the same examples on every run ("repeatable", the default: a clean clone in CI tests what was
# tested here); HYPOTHESIS_PROFILE=explore draws new ones each run, to search for failures (one found this way: the
# sigmoid_topk tie in tests/test_gates_routers.py). The GPU machine's image has no hypothesis: nothing to set there.
try:
    from hypothesis import settings as _hypothesis_settings  # noqa: E402

    _hypothesis_settings.register_profile("repeatable", derandomize=True)
    _hypothesis_settings.register_profile("explore", derandomize=False)
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
except ImportError:
    pass

try:  # no CUDA here: Triton kernels run in its interpreter (see load_triton_kernels)
    import torch  # noqa: E402

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:
    pass


def _load(framework: str):
    """Import a gate backend, or skip the test with the reason."""
    if framework == "torch":
        torch = pytest.importorskip("torch", reason="PyTorch is not installed")
        torch.backends.cuda.matmul.allow_tf32 = False  # correctness tests compare in full float32
        torch.backends.cudnn.allow_tf32 = False
        load_triton_kernels()
    else:
        pytest.importorskip("torch")  # import torch before TensorFlow (both load OpenMP; this order is safe)
        tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed")
        tf.config.run_functions_eagerly(False)
    import gates

    return gates.backend(framework)


def load_triton_kernels() -> bool:
    """Import ``gates.dselect_triton`` (DSelect-k's ``impl="triton"``) if Triton is installed; False if not.

    Without a CUDA device it runs in Triton's CPU interpreter: ``TRITON_INTERPRET=1`` is set when this file is
    loaded (before anything imports Triton, which reads it once), so the CPU test suite runs the same kernels on
    CPU tensors."""
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        return False
    import gates.dselect_triton  # noqa: F401

    return True


@pytest.fixture(params=["torch", "tf"])
def framework(request) -> str:
    return request.param


@pytest.fixture
def G(framework):
    """The gate module (``gates.torch`` or ``gates.tf``) of the parametrised framework."""
    return _load(framework)


@pytest.fixture
def gt():
    return _load("torch")


@pytest.fixture
def gf():
    return _load("tf")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20211206)
