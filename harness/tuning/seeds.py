"""Seed lists of a study (tuning and held-out seeds), checked once for the tuning and the prediction studies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["check_seeds"]


def check_seeds(name: str, seeds: Any) -> tuple[int, ...]:
    """``seeds`` as a tuple of distinct ints >= 0 (a non-empty list), else ValueError naming ``name``."""
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds or any(
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 for s in seeds):
        raise ValueError(f"{name}: expected a non-empty list of integers >= 0; got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{name}: expected distinct seeds; got {list(seeds)!r}")
    return tuple(int(s) for s in seeds)
