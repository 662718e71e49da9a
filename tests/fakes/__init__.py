"""Test doubles that stand in for time and upstreams, never for our own code."""
