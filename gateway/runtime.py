"""The runtime: every long-lived object one config needs, built once at startup.

Providers (one connection pool each), their bulkheads and retry budgets, one
breaker per deployment, the 429 pause board and the tenants' limiters live here;
handlers reach it through ``app.state``. A reload builds a new ``Runtime``.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Final

from gateway.config import (
    CACHE_RUNG,
    STATIC_RUNG,
    AnthropicProviderConfig,
    AnyProviderConfig,
    GatewayConfig,
    MockProviderConfig,
    OpenAIProviderConfig,
)
from gateway.tenants import tenant_keys
from policies.breaker import Breaker, Transition
from policies.budget import RetryBudget
from policies.bulkhead import Bulkhead, TenantLimiter
from policies.clock import Clock, SystemClock
from policies.pause import PauseBoard
from policies.pipeline import Deployment, ProviderResources
from providers.anthropic import AnthropicProvider
from providers.mock import MockProvider
from providers.openai import OpenAIProvider

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gateway.request import RequestContext
    from providers.types import Provider

log = logging.getLogger("fusebox")
#: The connection pool holds at least the bulkhead plus this much headroom.
POOL_HEADROOM: Final = 8


class Route:
    """What one (tenant, alias) resolves to: its deployment rungs and the tail."""

    __slots__ = ("alias", "deployments", "has_cache", "static")

    def __init__(
        self,
        alias: str,
        deployments: list[Deployment],
        *,
        has_cache: bool,
        static: str | None,
    ) -> None:
        """Hold the resolved chain."""
        self.alias = alias
        self.deployments = deployments
        self.has_cache = has_cache
        self.static = static


class Runtime:
    """Everything a request needs, built from one ``GatewayConfig``."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Clock | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """Build providers, policies and routes; open no sockets yet."""
        env = os.environ if environ is None else environ
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.started_wall = self.clock.wall()
        self.pauses = PauseBoard(self.clock)
        self.providers: dict[str, Provider] = {
            name: build_provider(name, cfg, env)
            for name, cfg in config.providers.items()
        }
        self.resources = {
            name: ProviderResources(
                bulkhead=Bulkhead(name, cfg.bulkhead, self.clock),
                budget=RetryBudget(
                    cfg.retry.budget_ratio, cfg.retry.budget_min_per_s, self.clock
                ),
                retry=cfg.retry,
                timeouts=cfg.timeouts,
            )
            for name, cfg in config.providers.items()
        }
        self.deployments: dict[str, Deployment] = {}
        self.keys = tenant_keys(config, env)
        key_env = config.admin.key_env
        #: The admin bearer key, or None: then ``/fusebox/*`` is loopback-only.
        self.admin_key: str | None = env.get(key_env) or None if key_env else None
        self.limiters = {
            name: TenantLimiter(t.max_concurrent) for name, t in config.tenants.items()
        }
        self.routes: dict[tuple[str, str], Route] = {
            (tenant, alias): self._route(tenant, alias)
            for tenant in config.tenants
            for alias in config.models
        }

    def _route(self, tenant: str, alias: str) -> Route:
        chain = self.config.chain_for(tenant, alias)
        deployments = [self._deployment(r) for r in chain if not r.startswith("@")]
        return Route(
            alias,
            deployments,
            has_cache=CACHE_RUNG in chain,
            static=self.config.models[alias].static if STATIC_RUNG in chain else None,
        )

    def _deployment(self, rung: str) -> Deployment:
        found = self.deployments.get(rung)
        if found is None:
            provider_name, _, model = rung.partition("/")
            cfg = self.config.providers[provider_name]
            found = Deployment(
                provider=self.providers[provider_name],
                model=model,
                breaker=Breaker(rung, cfg.breaker, self.clock, self._on_transition),
                resources=self.resources[provider_name],
                pauses=self.pauses,
                clock=self.clock,
            )
            self.deployments[rung] = found
        return found

    def _on_transition(self, transition: Transition) -> None:
        log.warning(
            "breaker %s: %s -> %s (%s)",
            transition.deployment,
            transition.from_state.value,
            transition.to_state.value,
            transition.reason,
        )

    def on_request_end(self, ctx: RequestContext) -> None:
        """Record one finished request (request log and metrics read ``ctx``)."""

    def allowed(self, tenant: str) -> list[str]:
        """Return the aliases ``tenant`` may call, in config order."""
        allowed = self.config.tenants[tenant].models
        return [a for a in self.config.models if allowed is None or a in allowed]

    async def aclose(self) -> None:
        """Close every provider's connection pool."""
        for provider in self.providers.values():
            await provider.aclose()


def build_provider(
    name: str, cfg: AnyProviderConfig, environ: Mapping[str, str]
) -> Provider:
    """Build the adapter for one ``[providers.X]`` table."""
    pool = cfg.bulkhead.max_concurrent + POOL_HEADROOM
    if isinstance(cfg, MockProviderConfig):
        return MockProvider(name, latency_s=cfg.latency_s, prefill=True)
    key = environ.get(cfg.api_key_env) if cfg.api_key_env else None
    if isinstance(cfg, OpenAIProviderConfig):
        return OpenAIProvider(
            name,
            base_url=cfg.base_url,
            api_key=key,
            pool_size=pool,
            prefill=cfg.prefill,
            prefill_extra_body=cfg.prefill_extra_body,
        )
    if isinstance(cfg, AnthropicProviderConfig):
        return AnthropicProvider(
            name,
            base_url=cfg.base_url,
            api_key=key or "",
            anthropic_version=cfg.anthropic_version,
            max_tokens_default=cfg.max_tokens,
            prefill=cfg.prefill,
            pool_size=pool,
        )
    raise TypeError(f"unknown provider kind for {name}")  # pragma: no cover
