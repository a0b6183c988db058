"""Shared test set-up: quiet TensorFlow, deterministic numerics, framework fixtures that skip with a reason."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def _load(framework: str):
    """Import a gate backend, or skip the test with the reason."""
    if framework == "torch":
        torch = pytest.importorskip("torch", reason="PyTorch is not installed")
        torch.backends.cuda.matmul.allow_tf32 = False  # correctness tests compare in full float32
        torch.backends.cudnn.allow_tf32 = False
    else:
        pytest.importorskip("torch")  # import torch before TensorFlow (both load OpenMP; this order is safe)
        tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed")
        tf.config.run_functions_eagerly(False)
    import gates

    return gates.backend(framework)


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
