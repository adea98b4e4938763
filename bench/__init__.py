"""Benchmarks of gitquorum against reference implementations; run with ``python -m bench``."""
