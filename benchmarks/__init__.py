"""asv benchmarks of gatebench, generated from the harness's suite definitions (see ``benchmarks/grid.py``)."""
