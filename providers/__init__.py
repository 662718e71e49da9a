"""Upstream adapters and the shared types and errors at the bottom of the onion."""
