"""Benchmarks against the QEMU peers (not timed tests)."""
