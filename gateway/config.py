"""The config contract (DESIGN.md §3): TOML in, a frozen msgspec tree out.

Startup only, outside the onion: every layer reads its settings from this tree.
Loading parses the TOML, checks every section and entry on its own (so one run
reports every problem), lays each valid ``[defaults.*]`` table under the
per-provider overrides, converts the valid parts into frozen structs and then
checks cross-references. Every problem names its dotted key path and, where the
key can be found in the text, its line: ``origin:LINE: a.b[1]: message``.
"""

from __future__ import annotations

import contextlib
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal

import msgspec

from gateway.schema import Problem, check_tree, from_validation_error
from gateway.sourcemap import KeyPath, key_lines, parse, render
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

Sha256Hex = Annotated[
    str,
    msgspec.Meta(
        pattern="^[0-9a-f]{64}$",
        description="a sha256 hex digest (`fusebox hash-key KEY` prints it)",
    ),
]
EnvName = Annotated[
    str,
    msgspec.Meta(
        pattern="^[A-Za-z_][A-Za-z0-9_]*$",
        description="an environment variable name (letters, digits, _)",
    ),
]
HttpUrl = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^https?://[^/\s]+\S*$", description="an http:// or https:// URL"
    ),
]
RedisUrl = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(rediss?|unix)://\S+$",
        description="a redis://, rediss:// or unix:// URL",
    ),
]
Chain = Annotated[list[str], msgspec.Meta(min_length=1)]

CACHE_RUNG: Final = "@cache"
STATIC_RUNG: Final = "@static"
TAIL_RUNGS: Final = frozenset({CACHE_RUNG, STATIC_RUNG})
_TOML_AT: Final = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")


# ``frozen=True`` (and ``kw_only=True``) are inherited from ``Frozen`` at run time;
# they are repeated because mypy's dataclass_transform does not inherit them.


class ServerConfig(Frozen, frozen=True):
    """``[server]``: where to listen and the whole-request limits."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    max_body_mib: Annotated[float, msgspec.Meta(gt=0, le=1024)] = 8.0
    deadline_s: Seconds = 120.0
    drain_s: NonNegSeconds = 30.0


class AdminConfig(Frozen, frozen=True):
    """``[admin]``: the bearer key for ``/fusebox/*`` lives in this variable."""

    key_env: EnvName | None = None


class StoreConfig(Frozen, frozen=True):
    """``[store]``: where shared state and the cache live."""

    kind: Literal["local", "redis"] = "local"
    path: str = ".fusebox"
    url: RedisUrl | None = None
    #: Every Redis key starts with this, so fleets (or tests) can share a Redis.
    prefix: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "fusebox:"
    #: The longest one Redis call may take before it counts as failed.
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=5)] = 0.2


class CacheConfig(Frozen, frozen=True):
    """``[cache]``: plain caching and the stale-answer rung."""

    fresh_s: NonNegSeconds = 0.0
    stale_s: NonNegSeconds = 86400.0
    max_size_mib: Annotated[float, msgspec.Meta(gt=0)] = 256.0


class OtelConfig(Frozen, frozen=True):
    """``[otel]``: export traces over OTLP/HTTP (needs ``fusebox-gateway[otel]``)."""

    #: The collector's base URL, e.g. ``http://127.0.0.1:4318``; None: no traces
    #: (unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set).
    endpoint: HttpUrl | None = None
    service_name: Annotated[str, msgspec.Meta(min_length=1)] = "fusebox"


class DefaultsConfig(Frozen, frozen=True):
    """``[defaults.*]``: policy settings every provider starts from."""

    timeouts: TimeoutsConfig = TimeoutsConfig()
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    bulkhead: BulkheadConfig = BulkheadConfig()


class ProviderConfig(Frozen, frozen=True, tag_field="kind"):
    """``[providers.X]``: one upstream; the policy tables are already merged."""

    timeouts: TimeoutsConfig = TimeoutsConfig()
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    bulkhead: BulkheadConfig = BulkheadConfig()
    prefill: bool = False


class OpenAIProviderConfig(ProviderConfig, tag="openai", frozen=True, kw_only=True):
    """Any OpenAI-compatible API."""

    base_url: HttpUrl
    api_key_env: EnvName | None = None
    prefill_extra_body: dict[str, Any] | None = None


class AnthropicProviderConfig(
    ProviderConfig, tag="anthropic", frozen=True, kw_only=True
):
    """The Anthropic Messages API, translated to and from chat completions."""

    base_url: HttpUrl = "https://api.anthropic.com"
    api_key_env: EnvName | None = None
    anthropic_version: str = "2023-06-01"
    max_tokens: PositiveInt = 4096


class MockProviderConfig(ProviderConfig, tag="mock", frozen=True, kw_only=True):
    """The built-in simulated model: no network."""

    #: Why the upstream keys are rejected here (read by ``gateway.schema``).
    key_hints: ClassVar[Mapping[str, str]] = {
        "base_url": 'a kind = "mock" provider has no upstream URL',
        "api_key_env": 'a kind = "mock" provider needs no key',
    }

    latency_s: NonNegSeconds = 0.0


AnyProviderConfig = OpenAIProviderConfig | AnthropicProviderConfig | MockProviderConfig


class ModelConfig(Frozen, frozen=True):
    """``[models.X]``: an alias clients send as ``model``, and its chain."""

    chain: Chain
    static: str | None = None
    endpoint: Literal["chat", "embeddings"] = "chat"


class TenantConfig(Frozen, frozen=True):
    """``[tenants.X]``: who may call, which aliases, how much at once."""

    key_sha256: list[Sha256Hex] = msgspec.field(default_factory=list)
    keys_env: EnvName | None = None
    models: list[str] | None = None
    max_concurrent: PositiveInt | None = None
    chains: dict[str, Chain] = msgspec.field(default_factory=dict)


class GatewayConfig(Frozen, frozen=True):
    """The whole file."""

    server: ServerConfig = ServerConfig()
    admin: AdminConfig = AdminConfig()
    store: StoreConfig = StoreConfig()
    cache: CacheConfig = CacheConfig()
    otel: OtelConfig = OtelConfig()
    defaults: DefaultsConfig = DefaultsConfig()
    providers: dict[str, AnyProviderConfig] = msgspec.field(default_factory=dict)
    models: dict[str, ModelConfig] = msgspec.field(default_factory=dict)
    tenants: dict[str, TenantConfig] = msgspec.field(default_factory=dict)

    def chain_for(self, tenant: str, alias: str) -> list[str]:
        """Return the chain ``tenant`` uses for ``alias`` (its override, if any)."""
        override = self.tenants[tenant].chains.get(alias)
        return override if override is not None else self.models[alias].chain

    def missing_key_envs(self, environ: Mapping[str, str]) -> list[str]:
        """Return the ``api_key_env`` variables that are unset, in provider order."""
        return [
            p.api_key_env
            for p in self.providers.values()
            if not isinstance(p, MockProviderConfig)
            and p.api_key_env
            and not environ.get(p.api_key_env)
        ]


_SECTIONS: Final = {f.name: f.type for f in msgspec.structs.fields(GatewayConfig)}
_POLICY_TABLES: Final = {f.name: f.type for f in msgspec.structs.fields(DefaultsConfig)}
_SIMPLE_SECTIONS: Final = ("server", "admin", "store", "cache", "otel")
_NAMED_SECTIONS: Final = ("providers", "models", "tenants")


def load_config(path: str | Path) -> GatewayConfig:
    """Read, merge, validate and cross-check the TOML file at ``path``.

    Raises:
        ConfigError: with every problem found, each naming its key path.
    """
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: cannot read: not UTF-8 text"]) from exc
    return parse_config(source, origin=str(path))


def parse_config(source: str, *, origin: str = "<config>") -> GatewayConfig:
    """Parse TOML text into a checked ``GatewayConfig``.

    Raises:
        ConfigError: with every problem found, each ``origin:LINE: path: message``.
    """
    try:
        raw = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_toml_error(str(exc), source, origin)]) from exc
    except RecursionError as exc:
        raise ConfigError([f"{origin}: invalid TOML: nested too deeply"]) from exc
    from gateway.configcheck import reference_problems  # noqa: PLC0415 - it imports us

    decoder = _Decoder()
    config = decoder.config(raw)
    problems = decoder.problems + reference_problems(config, decoder.broken)
    if problems:
        raise ConfigError(_located(problems, source, origin))
    return config


def check_references(config: GatewayConfig) -> list[str]:
    """Return every cross-reference problem of ``config`` as ``key.path: message``."""
    from gateway.configcheck import reference_problems  # noqa: PLC0415 - it imports us

    return [f"{render(p.path)}: {p.message}" for p in reference_problems(config)]


def find_line(source: str, dotted: str) -> int | None:
    """Return the line of the key at ``dotted`` (``a.b.c[1]``), or of its table."""
    return _line_of(key_lines(source), parse(dotted))


class _Decoder:
    """Convert the parsed TOML section by section and entry by entry.

    Every problem is noted, and ``broken`` holds its key path. An invalid part is
    kept without its invalid keys (if that converts), so the cross-reference
    checks still see it; it is never returned, since a problem was reported.
    """

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.broken: set[KeyPath] = set()

    def config(self, raw: dict[str, Any]) -> GatewayConfig:
        self.problems += [_unknown(key) for key in raw if key not in _SECTIONS]
        defaults = self.valid_defaults(raw.get("defaults", {}))
        fields: dict[str, Any] = {
            "defaults": self.decode(defaults, DefaultsConfig, ("defaults",))
        }
        for name in _SIMPLE_SECTIONS:
            if name in raw:
                fields[name] = self.decode(raw[name], _SECTIONS[name], (name,))
        for name in _NAMED_SECTIONS:
            merge = defaults if name == "providers" else {}
            fields[name] = self.named(name, raw.get(name, {}), merge)
        return GatewayConfig(**{k: v for k, v in fields.items() if v is not None})

    def decode(self, value: object, tp: object, path: KeyPath) -> Any:  # noqa: ANN401
        """Return ``value`` as ``tp``; if invalid, report why and salvage the rest."""
        found = self.check(value, tp, path)
        if not found:
            return msgspec.convert(value, type=tp)
        bad = {p.path[len(path)] for p in found if len(p.path) > len(path)}
        if isinstance(value, dict) and bad:
            rest = {key: item for key, item in value.items() if key not in bad}
            with contextlib.suppress(msgspec.ValidationError):
                return msgspec.convert(rest, type=tp)
        self.broken.add(path)
        return None

    def check(self, value: object, tp: object, path: KeyPath) -> list[Problem]:
        """Report and return the problems of ``value`` as ``tp``."""
        found = check_tree(value, tp, path)
        if not found:
            try:
                msgspec.convert(value, type=tp)
            except msgspec.ValidationError as exc:  # a rule check_tree does not know
                found = [from_validation_error(exc, path)]
        self.problems += found
        self.broken.update(p.path for p in found)
        return found

    def valid_defaults(self, value: object) -> dict[str, Any]:
        """Return the valid ``[defaults.*]`` tables; report each invalid one once."""
        if not isinstance(value, dict):
            self.check(value, DefaultsConfig, ("defaults",))
            return {}
        valid: dict[str, Any] = {}
        for table, settings in value.items():
            if table not in _POLICY_TABLES:
                self.problems.append(_unknown("defaults", table))
            elif not self.check(settings, _POLICY_TABLES[table], ("defaults", table)):
                valid[table] = settings
        return valid

    def named(
        self, section: str, entries: object, defaults: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Decode each entry of ``[section.NAME]`` on its own."""
        if not isinstance(entries, dict):
            self.check(entries, _SECTIONS[section], (section,))
            self.broken.add((section,))
            return None
        item = typing.get_args(_SECTIONS[section])[1]
        decoded = {
            name: self.decode(_merged(entry, defaults), item, (section, name))
            for name, entry in entries.items()
        }
        return {name: value for name, value in decoded.items() if value is not None}


def _merged(entry: object, defaults: Mapping[str, Any]) -> object:
    """Lay the ``[defaults.*]`` tables under one provider's own tables."""
    if not isinstance(entry, dict):
        return entry
    merged = dict(entry)
    for table, base in defaults.items():
        own = entry.get(table, {})
        merged[table] = {**base, **own} if isinstance(own, dict) else own
    return merged


def _unknown(*path: str) -> Problem:
    return Problem(path, "unknown key")


def _toml_error(message: str, source: str, origin: str) -> str:
    """Format a ``tomllib`` error as ``origin:LINE: invalid TOML: ...``."""
    at = _TOML_AT.search(message)
    text = message[: at.start()] if at else message
    if at is None:
        return f"{origin}: invalid TOML: {text}"
    if at.group(1) is None:  # "at end of document"
        return f"{origin}:{len(source.splitlines()) or 1}: invalid TOML: {text}"
    return f"{origin}:{at.group(1)}: invalid TOML: {text} (column {at.group(2)})"


def _located(problems: list[Problem], source: str, origin: str) -> list[str]:
    """Format ``problems`` as ``origin:LINE: path: message``, in file order."""
    try:
        lines = key_lines(source)
    except RecursionError:  # absurd nesting: report without lines
        lines = {}
    located = sorted(
        ((_line_of(lines, p.path) or 0, _order(p.path), p) for p in problems),
        key=lambda item: item[:2],
    )
    return [
        f"{origin}{f':{line}' if line else ''}: {render(p.path) or '(top level)'}: "
        f"{p.message}"
        for line, _, p in located
    ]


def _order(path: KeyPath) -> list[tuple[int, str]]:
    """Sort key of a path: numbers before names, array elements in index order."""
    return [(part, "") if isinstance(part, int) else (-1, part) for part in path]


def _line_of(lines: Mapping[KeyPath, int], path: KeyPath) -> int | None:
    """Return the line of ``path``, else of its nearest enclosing key."""
    for depth in range(len(path), 0, -1):
        line = lines.get(path[:depth])
        if line is not None:
            return line
    return None
