"""pytest-benchmark benchmarks of the gates (the harness adapters, cases from suites/smoke.toml)."""
