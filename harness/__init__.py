"""gatebench harness: timing and recovery of gates, driven by suites, writing results rows.

Importing it loads no framework; adapters import PyTorch or TensorFlow on first use.
"""
