"""Fair verdicts: every gate tuned with the same budget on tuning seeds, then judged on held-out seeds.

- ``space``: the search space of each gate (``lr`` for all; DSelect-k, hard concrete and Top-k their own knobs).
- ``validation``: what a trial trains and is scored on (a validation split; no test split, no planted support).
- ``trial``: one run of a study as a recovery task and row (tuning or held-out), and its executor.
- ``study``: the protocol (``TuningConfig``, ``run_tuning``: trials sampled by Optuna, resumable from the rows).
- ``stats``: mean ± s.e., paired Wilcoxon against the baseline, Holm's correction.
- ``suite``: ``kind = "tuning"`` suite files.

Nothing here imports a framework or Optuna until a study runs. See docs/tuning.md.
"""
