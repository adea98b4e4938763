"""Fault tests: replicas killed and cut off under concurrent pushes, invariants checked."""
