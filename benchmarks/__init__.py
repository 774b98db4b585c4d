"""Benchmarks: each script prints its figures; `python benchmarks/run_all.py` runs them all."""
