"""Measurement scripts whose results are committed under docs/results/ (run as ``python -m scripts.NAME``)."""
