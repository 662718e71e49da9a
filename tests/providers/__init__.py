"""Tests of the provider adapters: pure translation and fake upstreams on sockets."""
