"""Tests of the pure policy primitives, driven by a fake clock."""
