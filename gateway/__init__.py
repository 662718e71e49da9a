"""Fusebox gateway: the HTTP surface, config, tenants and the CLI (outermost layer)."""
