"""Fusebox's test suite: one package per source package, plus shared fakes."""
