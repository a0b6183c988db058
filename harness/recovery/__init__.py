"""Expert recovery on planted-expert problems: can a gate find the experts that generated the data?

- ``problem``: ``RecoveryProblem``, the frozen, validated definition (data knobs and the training recipe).
- ``data``: seeded NumPy generation of one instance (``generate(problem, seed)``), identical for both frameworks.
- ``train_torch`` / ``train_tf``: the training loops, side by side (imported only when a run needs them).
- ``metrics``: support precision / recall / F1, exact-support rate, steps to support, stability, expert matching,
  and statistics over seeds (mean +- s.e., Wilcoxon, Mann-Whitney).
- ``run``: one run or many seeds; ``suite``: the ``recovery`` suite (``expand``, ``run_case``; run by
  ``harness.runner.run_suite``);
  ``report``: summaries of results rows.

Importing this package does not import PyTorch or TensorFlow.
"""

from .data import PlantedData, generate
from .problem import RecoveryProblem

__all__ = ["PlantedData", "RecoveryProblem", "generate"]
