"""The config contract (DESIGN.md §3): TOML in, a frozen msgspec tree out.

Loading is one decode: the TOML is parsed, every ``[defaults.*]`` table is merged
under the per-provider overrides, and the result is converted into frozen structs
in one ``msgspec.convert`` call. Cross-references are checked afterwards. Every
problem names its dotted key path and, where it can be found, its line.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from policies.config import (
    BreakerConfig,
    BulkheadConfig,
    Frozen,
    NonNegSeconds,
    PositiveInt,
    RetryConfig,
    Seconds,
    TimeoutsConfig,
)
from providers.errors import ConfigError

Sha256Hex = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]

CACHE_RUNG = "@cache"
STATIC_RUNG = "@static"



class ServerConfig(Frozen):
    """``[server]``: where to listen and the whole-request limits."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    max_body_mib: Annotated[float, msgspec.Meta(gt=0, le=1024)] = 8.0
    deadline_s: Seconds = 120.0
    drain_s: NonNegSeconds = 30.0


class AdminConfig(Frozen):
    """``[admin]``: the bearer key for ``/fusebox/*`` lives in this variable."""

    key_env: str | None = None


class StoreConfig(Frozen):
    """``[store]``: where shared state and the cache live."""

    kind: Literal["local", "redis"] = "local"
    path: str = ".fusebox"
    url: str | None = None


class CacheConfig(Frozen):
    """``[cache]``: plain caching and the stale-answer rung."""

    fresh_s: NonNegSeconds = 0.0
    stale_s: NonNegSeconds = 86400.0
    max_size_mib: Annotated[float, msgspec.Meta(gt=0)] = 256.0


class DefaultsConfig(Frozen):
    """``[defaults.*]``: policy settings every provider starts from."""

    timeouts: TimeoutsConfig = TimeoutsConfig()
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    bulkhead: BulkheadConfig = BulkheadConfig()


class ProviderConfig(Frozen, tag_field="kind"):
    """``[providers.X]``: one upstream; the policy tables are already merged."""

    timeouts: TimeoutsConfig = TimeoutsConfig()
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    bulkhead: BulkheadConfig = BulkheadConfig()
    prefill: bool = False


class OpenAIProviderConfig(ProviderConfig, tag="openai", kw_only=True):
    """Any OpenAI-compatible API."""

    base_url: str
    api_key_env: str | None = None
    prefill_extra_body: dict[str, Any] | None = None


class AnthropicProviderConfig(ProviderConfig, tag="anthropic", kw_only=True):
    """The Anthropic Messages API, translated to and from chat completions."""

    base_url: str = "https://api.anthropic.com"
    api_key_env: str | None = None
    anthropic_version: str = "2023-06-01"
    max_tokens: PositiveInt = 4096


class MockProviderConfig(ProviderConfig, tag="mock", kw_only=True):
    """The built-in simulated model: no network."""

    latency_s: NonNegSeconds = 0.0


AnyProviderConfig = OpenAIProviderConfig | AnthropicProviderConfig | MockProviderConfig


class ModelConfig(Frozen):
    """``[models.X]``: an alias clients send as ``model``, and its chain."""

    chain: Annotated[list[str], msgspec.Meta(min_length=1)]
    static: str | None = None
    endpoint: Literal["chat", "embeddings"] = "chat"


class TenantConfig(Frozen):
    """``[tenants.X]``: who may call, which aliases, how much at once."""

    key_sha256: list[Sha256Hex] = []
    keys_env: str | None = None
    models: list[str] | None = None
    max_concurrent: PositiveInt | None = None
    chains: dict[str, Annotated[list[str], msgspec.Meta(min_length=1)]] = {}


class GatewayConfig(Frozen):
    """The whole file."""

    server: ServerConfig = ServerConfig()
    admin: AdminConfig = AdminConfig()
    store: StoreConfig = StoreConfig()
    cache: CacheConfig = CacheConfig()
    defaults: DefaultsConfig = DefaultsConfig()
    providers: dict[str, AnyProviderConfig] = {}
    models: dict[str, ModelConfig] = {}
    tenants: dict[str, TenantConfig] = {}

    def chain_for(self, tenant: str, alias: str) -> list[str]:
        """Return the chain ``tenant`` uses for ``alias`` (its override, if any)."""
        override = self.tenants[tenant].chains.get(alias)
        return override if override is not None else self.models[alias].chain

    def missing_key_envs(self, environ: dict[str, str] | Any) -> list[str]:
        """Return the ``api_key_env`` variables that are unset, in provider order."""
        return [
            p.api_key_env
            for p in self.providers.values()
            if not isinstance(p, MockProviderConfig)
            and p.api_key_env
            and not environ.get(p.api_key_env)
        ]


_POLICY_TABLES = ("timeouts", "retry", "breaker", "bulkhead")
_NAMED_SECTIONS: dict[str, Any] = {
    "providers": AnyProviderConfig,
    "models": ModelConfig,
    "tenants": TenantConfig,
}
_PATH_PART = re.compile(r"\.?([A-Za-z0-9_\-]+)|\[(\d+)\]")


def load_config(path: str | Path) -> GatewayConfig:
    """Read, merge, validate and cross-check the TOML file at ``path``.

    Raises:
        ConfigError: with every problem found, each naming its key path.
    """
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    return parse_config(source, origin=str(path))


def parse_config(source: str, *, origin: str = "<config>") -> GatewayConfig:
    """Parse TOML text into a checked ``GatewayConfig``."""
    try:
        raw = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{origin}: invalid TOML: {exc}"]) from exc
    _merge_defaults(raw)
    problems: list[str] = []
    named: dict[str, Any] = {}
    for section, kind in _NAMED_SECTIONS.items():
        entries = raw.pop(section, {})
        if not isinstance(entries, dict):
            problems.append(f"{section}: expected a table")
            continue
        named[section] = {}
        for name, entry in entries.items():
            try:
                named[section][name] = msgspec.convert(entry, type=kind)
            except msgspec.ValidationError as exc:
                problems.append(_describe(str(exc), f"{section}.{name}", source, origin))
    try:
        config = msgspec.convert(raw, type=GatewayConfig)
    except msgspec.ValidationError as exc:
        problems.insert(0, _describe(str(exc), "", source, origin))
    if problems:
        raise ConfigError(problems)
    config = msgspec.structs.replace(config, **named)
    problems = check_references(config)
    if problems:
        raise ConfigError([_with_line(p, source, origin) for p in problems])
    return config


def _merge_defaults(raw: dict[str, Any]) -> None:
    """Lay each ``[defaults.*]`` table under every provider's own table."""
    defaults = raw.get("defaults")
    providers = raw.get("providers")
    if not isinstance(defaults, dict) or not isinstance(providers, dict):
        return
    for provider in providers.values():
        if not isinstance(provider, dict):
            continue
        for table in _POLICY_TABLES:
            base = defaults.get(table)
            if isinstance(base, dict):
                own = provider.get(table, {})
                if isinstance(own, dict):
                    provider[table] = {**base, **own}


def check_references(config: GatewayConfig) -> list[str]:
    """Return every cross-reference problem as ``key.path: message``."""
    problems: list[str] = []
    for alias, model in config.models.items():
        problems += _check_chain(config, f"models.{alias}.chain", model.chain, model)
    for name, tenant in config.tenants.items():
        if not tenant.key_sha256 and not tenant.keys_env:
            problems.append(f"tenants.{name}: needs key_sha256 or keys_env")
        for i, alias in enumerate(tenant.models or []):
            if alias not in config.models:
                problems.append(f"tenants.{name}.models[{i}]: unknown alias {alias!r}")
        for alias, chain in tenant.chains.items():
            where = f"tenants.{name}.chains.{alias}"
            if alias not in config.models:
                problems.append(f"{where}: unknown alias {alias!r}")
            else:
                problems += _check_chain(config, where, chain, config.models[alias])
    if config.store.kind == "redis" and not config.store.url:
        problems.append('store.url: required when store.kind = "redis"')
    return problems


def _check_chain(
    config: GatewayConfig, where: str, chain: list[str], model: ModelConfig
) -> list[str]:
    problems: list[str] = []
    for i, rung in enumerate(chain):
        here = f"{where}[{i}]"
        if rung in {CACHE_RUNG, STATIC_RUNG}:
            if model.endpoint == "embeddings":
                problems.append(f"{here}: {rung} is not allowed in an embeddings chain")
            elif rung == STATIC_RUNG and model.static is None:
                problems.append(f"{here}: @static needs a `static` text on the alias")
            continue
        provider, slash, name = rung.partition("/")
        if rung.startswith("@"):
            problems.append(f"{here}: unknown rung {rung!r} (use @cache or @static)")
        elif not slash or not name:
            problems.append(f"{here}: {rung!r} is not of the form provider/model")
        elif provider not in config.providers:
            problems.append(f"{here}: unknown provider {provider!r}")
    if len(set(chain)) != len(chain):
        problems.append(f"{where}: a rung appears twice")
    return problems


def _describe(message: str, prefix: str, source: str, origin: str) -> str:
    """Turn msgspec's ``... - at `$.a.b[0]``` into ``origin:line: a.b[0]: ...``."""
    text, sep, where = message.rpartition(" - at `$")
    if not sep:
        text, where = message, ""
    dotted = ".".join(p for p in (prefix, where.rstrip("`").lstrip(".")) if p)
    dotted = dotted.replace(".[", "[")
    return _with_line(f"{dotted or '(top level)'}: {text}", source, origin)


def _with_line(problem: str, source: str, origin: str) -> str:
    dotted = problem.partition(": ")[0]
    line = find_line(source, dotted)
    return f"{origin}:{line}: {problem}" if line else f"{origin}: {problem}"


def find_line(source: str, dotted: str) -> int | None:
    """Best-effort line number of the key at ``dotted`` (``a.b.c[1]``) in ``source``."""
    parts = [m.group(1) for m in _PATH_PART.finditer(dotted) if m.group(1)]
    if not parts:
        return None
    lines = source.splitlines()
    best: int | None = None
    for depth in range(len(parts), 0, -1):
        header = "[" + ".".join(parts[:depth]) + "]"
        key = parts[depth] if depth < len(parts) else None
        start = _find_header(lines, header)
        if start is None:
            continue
        if key is None:
            return start + 1
        found = _find_key(lines, start + 1, key)
        return (found + 1) if found is not None else start + 1
    top = _find_key(lines, 0, parts[0])
    if top is not None:
        best = top + 1
    return best


def _find_header(lines: list[str], header: str) -> int | None:
    for i, line in enumerate(lines):
        if line.strip().split("#", 1)[0].strip() == header:
            return i
    return None


def _find_key(lines: list[str], start: int, key: str) -> int | None:
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for i in range(start, len(lines)):
        stripped = lines[i].strip()
        if stripped.startswith("[") and i > start:
            return None
        if pattern.match(lines[i]):
            return i
    return None
