"""Tests of the gateway package: the app, its routes and the test equipment."""
