"""Fusebox's speed harness: ``python -m benchmarks.run [--quick]`` (see README.md)."""
