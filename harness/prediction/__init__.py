"""Prediction on real data: a multi-task mixture of experts on two-digit images built from scikit-learn's bundled
digits (``data``), one model written alike in PyTorch (``model_torch``) and TensorFlow (``model_tf``) with every
gate of the project, and the protocol that tunes each gate with the same budget and judges it on held-out seeds
(``study``). Importing this package loads no framework, scikit-learn or Optuna."""
