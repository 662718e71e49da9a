"""Tenant keys: who is calling, from the key they present.

Outermost layer of the onion (auth -> tenant). At startup every tenant key is
reduced to its sha256 hex digest (from ``key_sha256`` in the config, or from the
comma-separated keys in the ``keys_env`` variable), so no plain key is held
after loading; each request costs one sha256 of the presented key.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from providers.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gateway.config import GatewayConfig


def key_digest(key: str) -> str:
    """Return the sha256 hex digest of ``key``, as ``key_sha256`` holds it."""
    # surrogatepass: a header decoded with odd bytes must not raise here.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def env_keys(value: str) -> list[str]:
    """Split a ``keys_env`` value: comma-separated keys, blanks ignored."""
    return [key.strip() for key in value.split(",") if key.strip()]


def tenant_keys(config: GatewayConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """Map the sha256 hex digest of every tenant key to its tenant's name.

    Keys in a tenant's ``keys_env`` variable are hashed here; an unset
    variable adds no keys (``fusebox check`` warns about it).

    Raises:
        ConfigError: if one key belongs to two tenants.
    """
    table: dict[str, str] = {}
    for name, tenant in config.tenants.items():
        digests = list(tenant.key_sha256)
        if tenant.keys_env:
            digests += [
                key_digest(k) for k in env_keys(environ.get(tenant.keys_env, ""))
            ]
        for digest in digests:
            owner = table.setdefault(digest, name)
            if owner != name:
                problem = f"tenants.{name}: a key also belongs to tenant {owner!r}"
                raise ConfigError([problem])
    return table


def resolve_tenant(table: Mapping[str, str], presented_key: str) -> str | None:
    """Return the tenant whose key is ``presented_key``, or ``None``.

    ``table`` comes from ``tenant_keys``. The lookup is by digest, in a dict:
    its timing can only tell how the sha256 of the caller's own input compares
    with stored digests, and since the caller cannot choose digests (preimage
    resistance), that says nothing about any key. So no per-digest
    ``hmac.compare_digest`` loop is needed, and a lookup stays O(1) however
    many keys there are. No plain key is kept or cached.
    """
    if not presented_key:
        return None
    return table.get(key_digest(presented_key))
