"""Cross-reference and meaning checks of a config that is structurally valid.

Startup only, outside the onion: after ``gateway.config`` has converted every
valid section, these checks look at what the keys mean together: chains name
known providers, rungs are well formed and reachable, tenants can authenticate
and name known aliases. Each problem is a ``Problem`` at a key path.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final, NamedTuple

from gateway.config import (
    CACHE_RUNG,
    STATIC_RUNG,
    TAIL_RUNGS,
    AnthropicProviderConfig,
    GatewayConfig,
    TenantConfig,
)
from gateway.schema import Problem

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Mapping

    from gateway.sourcemap import KeyPath

_DEPLOYMENT: Final = re.compile(r"[^/\s]+/\S+")
_NO_KEYS: Final = "needs key_sha256 or keys_env, or no request can authenticate as it"


def reference_problems(
    config: GatewayConfig, broken: Collection[KeyPath] = ()
) -> list[Problem]:
    """Return every cross-reference problem of ``config``.

    ``broken`` holds the key paths of sections and entries already reported as
    invalid (and left out of ``config``); references to them are not reported
    again as unknown.
    """
    return _References(config, frozenset(broken)).problems()


class _References:
    """The cross-reference and meaning checks of a structurally valid tree.

    References to entries that were already reported as invalid (``broken``)
    are not reported again as unknown.
    """

    def __init__(self, config: GatewayConfig, broken: frozenset[KeyPath]) -> None:
        self.config = config
        self.broken = broken

    def problems(self) -> list[Problem]:
        found = [*self.sections(), *self.shared_keys()]
        for alias, model in self.config.models.items():
            found += self.chain(("models", alias, "chain"), model.chain, alias)
        for name in self.config.tenants:
            found += self.tenant(name)
        return found

    def known(self, section: str, name: str) -> bool:
        """Tell whether ``name`` exists in ``section``, or was already reported."""
        entries: Mapping[str, object] = getattr(self.config, section)
        return name in entries or bool({(section,), (section, name)} & self.broken)

    def bad(self, *paths: KeyPath) -> bool:
        """Tell whether a problem was already reported at or under any of ``paths``."""
        return any(b[: len(p)] == p for b in self.broken for p in paths)

    def sections(self) -> Iterator[Problem]:
        store = self.config.store
        if store.kind == "redis" and not store.url and not self.bad(("store",)):
            yield Problem(("store", "url"), 'required when store.kind = "redis"')

    def shared_keys(self) -> Iterator[Problem]:
        owners: dict[str, str] = {}
        for name, tenant in self.config.tenants.items():
            for i, digest in enumerate(tenant.key_sha256):
                owner = owners.setdefault(digest, name)
                if owner != name:
                    path = ("tenants", name, "key_sha256", i)
                    yield Problem(
                        path, f"the same key already belongs to tenant {owner!r}"
                    )

    def tenant(self, name: str) -> list[Problem]:
        tenant, path = self.config.tenants[name], ("tenants", name)
        found: list[Problem] = []
        keys = (*path, "key_sha256"), (*path, "keys_env")
        if not tenant.key_sha256 and not tenant.keys_env and not self.bad(*keys):
            found.append(Problem(path, _NO_KEYS))
        for i, alias in enumerate(tenant.models or []):
            if not self.known("models", alias):
                found.append(Problem((*path, "models", i), f"unknown alias {alias!r}"))
        for alias, chain in tenant.chains.items():
            found += self.tenant_chain((*path, "chains", alias), tenant, alias, chain)
        return found

    def tenant_chain(
        self, path: KeyPath, tenant: TenantConfig, alias: str, chain: list[str]
    ) -> list[Problem]:
        model = self.config.models.get(alias)
        if model is None:
            known = self.known("models", alias)
            return (
                [] if known else [Problem(path, f"chain for unknown alias {alias!r}")]
            )
        found = self.chain(path, chain, alias)
        if tenant.models is not None and alias not in tenant.models:
            found.insert(0, Problem(path, f"the tenant may not call {alias!r}"))
        return found

    def chain(self, path: KeyPath, chain: list[str], alias: str) -> list[Problem]:
        """Check the rungs of ``chain``, which serves ``alias``."""
        model = self.config.models[alias]
        tail = _Tail(
            is_embeddings=model.endpoint == "embeddings",
            has_static=model.static is not None
            or self.bad(("models", alias, "static")),
        )
        found = [
            p for i, rung in enumerate(chain) for p in self.rung((*path, i), rung, tail)
        ]
        found += _order_problems(path, chain)
        if tail.is_embeddings and all(rung in TAIL_RUNGS for rung in chain):
            found.append(
                Problem(path, "an embeddings chain needs a provider/model rung")
            )
        return found

    def rung(self, path: KeyPath, rung: str, tail: _Tail) -> Iterator[Problem]:
        if rung in TAIL_RUNGS:
            if tail.is_embeddings:
                yield Problem(path, f"{rung} is not allowed in an embeddings chain")
            elif rung == STATIC_RUNG and not tail.has_static:
                yield Problem(path, "@static needs a `static` text on the alias")
        elif rung.startswith("@"):
            yield Problem(path, f"unknown rung {rung!r} (use @cache or @static)")
        elif not _DEPLOYMENT.fullmatch(rung):
            yield Problem(path, f"{rung!r} is not of the form provider/model")
        elif not self.known("providers", rung.partition("/")[0]):
            yield Problem(path, f"unknown provider {rung.partition('/')[0]!r}")
        elif tail.is_embeddings and isinstance(
            self.config.providers.get(rung.partition("/")[0]), AnthropicProviderConfig
        ):
            yield Problem(path, "an anthropic provider has no embeddings API")


class _Tail(NamedTuple):
    """What the alias of a chain allows at its tail."""

    is_embeddings: bool
    has_static: bool


def _order_problems(path: KeyPath, chain: list[str]) -> Iterator[Problem]:
    """Report rungs that can never be tried, and repeated rungs."""
    tail: str | None = None
    first: dict[str, int] = {}
    for i, rung in enumerate(chain):
        if tail == STATIC_RUNG:
            yield Problem((*path, i), "never tried: @static must be the last rung")
        elif tail == CACHE_RUNG and not rung.startswith("@"):
            yield Problem(
                (*path, i), "never tried: @cache must follow every deployment"
            )
        if rung in TAIL_RUNGS and tail != STATIC_RUNG:
            tail = rung
        if first.setdefault(rung, i) != i:
            yield Problem((*path, i), f"{rung!r} is already rung [{first[rung]}]")
