"""gatebench's entry points: the ``gatebench`` command line (``gatebench.cli``, one module per command) and
``python -m gatebench``. Nothing in ``gates``, ``harness`` or ``reports`` imports this package."""
