"""``fusebox check`` and ``fusebox hash-key``: offline commands around the config.

Outside the onion: they read the config contract (DESIGN.md §3, §7) and never
touch an upstream. ``check`` prints a summary and warnings on stdout and every
problem on stderr, one per line (``path:LINE: key.path: message``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from gateway.config import MockProviderConfig, OpenAIProviderConfig, parse_config
from gateway.tenants import env_keys, key_digest
from providers.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gateway.config import AnyProviderConfig, GatewayConfig

#: How much of a key digest the summary shows: enough to tell keys apart.
DIGEST_PREFIX: Final = 8
#: How many key digests a tenant's line lists.
MAX_SHOWN: Final = 3


def check(path: str) -> int:
    """Validate the config at ``path``; print a summary (0) or every problem (1)."""
    try:
        source = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        _err(f"fusebox check: cannot read {path}: {exc.strerror or exc}")
        return 1
    except UnicodeDecodeError:
        _err(f"fusebox check: cannot read {path}: not UTF-8 text")
        return 1
    try:
        config = parse_config(source, origin=path)
    except ConfigError as exc:
        for problem in exc.problems:
            _err(problem)
        _err(f"{path}: {_count(len(exc.problems), 'problem')}; the config is not valid")
        return 1
    except Exception as exc:  # a bug of ours must still not print a traceback
        _err(f"fusebox check: internal error while checking {path}: {exc!r}")
        return 1
    _out("\n".join(summary(config, os.environ, origin=path)))
    return 0


def hash_key(key: str) -> int:
    """Print the sha256 hex digest of a tenant key, for ``key_sha256``."""
    if not key:
        _err("fusebox hash-key: the key is empty")
        return 1
    _out(key_digest(key))
    return 0


def summary(
    config: GatewayConfig, environ: Mapping[str, str], *, origin: str = "<config>"
) -> list[str]:
    """Describe ``config`` for people: one line per provider, alias and tenant.

    Warnings (unset key variables) come last, each line starting ``warning:``.
    """
    return [
        f"{origin}: OK",
        *_server(config),
        f"providers ({len(config.providers)}):",
        *_providers(config),
        f"aliases ({len(config.models)}):",
        *_aliases(config),
        f"tenants ({len(config.tenants)}):",
        *_tenants(config, environ),
        *(f"warning: {w}" for w in _warnings(config, environ)),
    ]


def _out(text: str) -> None:
    sys.stdout.write(f"{text}\n")


def _err(text: str) -> None:
    sys.stderr.write(f"{text}\n")


def _server(config: GatewayConfig) -> list[str]:
    server, store, cache = config.server, config.store, config.cache
    where = store.url if store.kind == "redis" else store.path
    admin = f"${config.admin.key_env}" if config.admin.key_env else "loopback only"
    listen = (
        f"server: {server.host}:{server.port}, deadline {server.deadline_s:g} s, "
        f"drain {server.drain_s:g} s, max body {server.max_body_mib:g} MiB"
    )
    state = (
        f"store: {store.kind} ({where}), cache fresh {cache.fresh_s:g} s / "
        f"stale {cache.stale_s:g} s, admin key {admin}"
    )
    return [listen, state]


def _providers(config: GatewayConfig) -> list[str]:
    width = max((len(name) for name in config.providers), default=0)
    return [
        f"  {name:<{width}}  {_describe_provider(provider)}"
        for name, provider in config.providers.items()
    ]


def _describe_provider(provider: AnyProviderConfig) -> str:
    bulkhead, breaker = provider.bulkhead, provider.breaker
    limits = (
        f"bulkhead {bulkhead.max_concurrent} (+{bulkhead.max_waiting} waiting), "
        f"breaker open {breaker.open_s:g} s, {provider.retry.attempts} attempts"
    )
    limits += ", prefill" if provider.prefill else ""
    if isinstance(provider, MockProviderConfig):
        return f"mock       built in, latency {provider.latency_s:g} s; {limits}"
    kind = "openai" if isinstance(provider, OpenAIProviderConfig) else "anthropic"
    key = f"key ${provider.api_key_env}" if provider.api_key_env else "no key"
    return f"{kind:<9}  {provider.base_url}, {key}; {limits}"


def _aliases(config: GatewayConfig) -> list[str]:
    width = max((len(alias) for alias in config.models), default=0)
    rows: list[str] = []
    for alias, model in config.models.items():
        rows.append(f"  {alias:<{width}}  {model.endpoint:<10}  {_chain(model.chain)}")
        if model.static is not None:
            rows.append(f"  {'':<{width}}  static text: {_shorten(model.static)}")
    return rows


def _tenants(config: GatewayConfig, environ: Mapping[str, str]) -> list[str]:
    rows: list[str] = []
    for name, tenant in config.tenants.items():
        digests = list(tenant.key_sha256)
        if tenant.keys_env:
            digests += [
                key_digest(k) for k in env_keys(environ.get(tenant.keys_env, ""))
            ]
        # Only a prefix of each digest: enough to tell keys apart, never the key.
        shown = ", ".join(f"{d[:DIGEST_PREFIX]}..." for d in digests[:MAX_SHOWN])
        shown += ", ..." if len(digests) > MAX_SHOWN else ""
        aliases = ", ".join(tenant.models) if tenant.models is not None else "all"
        limit = tenant.max_concurrent or "no limit"
        rows.append(
            f"  {name}: {_count(len(digests), 'key')} ({shown or 'none'}), "
            f"aliases: {aliases or 'none'}, max concurrent: {limit}"
        )
        rows += [f"    chain {a}: {_chain(c)}" for a, c in tenant.chains.items()]
    return rows


def _warnings(config: GatewayConfig, environ: Mapping[str, str]) -> list[str]:
    found = [
        f"${env} is unset (providers.{name}.api_key_env): "
        "`fusebox serve` refuses to start until it is set"
        for name, provider in config.providers.items()
        if not isinstance(provider, MockProviderConfig)
        and (env := provider.api_key_env)
        and not environ.get(env)
    ]
    found += [
        f"${tenant.keys_env} is unset or empty (tenants.{name}.keys_env): "
        f"no key from it can authenticate as {name!r}"
        for name, tenant in config.tenants.items()
        if tenant.keys_env and not env_keys(environ.get(tenant.keys_env, ""))
    ]
    found += admin_warnings(config, environ)
    if not config.tenants:
        found.append("no [tenants.*]: every request will be refused with 401")
    return found


def admin_warnings(config: GatewayConfig, environ: Mapping[str, str]) -> list[str]:
    """Warn when the admin key's variable is named but unset (loopback-only then)."""
    env = config.admin.key_env
    if env and not environ.get(env):
        return [
            (
                f"${env} is unset (admin.key_env): the admin API (/fusebox/*) "
                "answers loopback clients only, with no key"
            )
        ]
    return []


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _chain(chain: list[str]) -> str:
    return " -> ".join(chain)


def _shorten(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= width else flat[: width - 3] + "...")
