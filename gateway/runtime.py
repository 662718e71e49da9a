"""The runtime: every long-lived object one config needs, built once at startup.

Providers (one connection pool each), their bulkheads and retry budgets, one
breaker per deployment, the 429 pause board and the tenants' limiters live here;
handlers reach it through ``app.state``. A reload builds a new ``Runtime``.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Final

from gateway.cache import ResponseCache
from gateway.config import (
    CACHE_RUNG,
    STATIC_RUNG,
    AnthropicProviderConfig,
    AnyProviderConfig,
    GatewayConfig,
    MockProviderConfig,
    OpenAIProviderConfig,
)
from gateway.idempotency import Idempotency
from gateway.inflight import InFlight
from gateway.metrics import Metrics
from gateway.readiness import StoreProbe
from gateway.reqlog import log_request, log_transition
from gateway.store import build_byte_store, build_store
from gateway.tenants import tenant_keys
from gateway.tracing import build_tracing
from policies.breaker import Breaker, Transition
from policies.bulkhead import Bulkhead
from policies.clock import Clock, SystemClock
from policies.pipeline import Deployment, ProviderResources
from providers.anthropic import AnthropicProvider
from providers.mock import MockProvider
from providers.openai import OpenAIProvider

if TYPE_CHECKING:
    from collections.abc import Mapping

    from opentelemetry.trace import TracerProvider

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
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        """Build providers, policies and routes; open no sockets yet.

        ``tracer_provider`` replaces the ``[otel]`` exporter (tests inject one).
        """
        env = os.environ if environ is None else environ
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.started_wall = self.clock.wall()
        #: Set once the app's lifespan startup ran; ``/readyz`` waits for it.
        self.started = False
        #: Set by a graceful drain: ``/readyz`` then answers 503.
        self.draining = False
        #: Requests running on this runtime; a reload closes it when they are done.
        self.in_flight = InFlight()
        self.metrics = Metrics()
        #: Kept so a reload traces to the same place.
        self.tracer_provider = tracer_provider
        #: The request tracer, or None when tracing is off (``gateway.tracing``).
        self.tracing = build_tracing(config, env, tracer_provider)
        #: Where breakers, budgets, pauses and tenant shares are kept (the seam).
        self.store = build_store(config.store, self.clock)
        self.store_probe = StoreProbe(config.store, self.clock, self.store)
        self.pauses = self.store.pause_board(self.clock)
        #: Answers and idempotency records: on disk under ``store.path``/cache
        #: (opened on first use), or in Redis with ``store.kind = "redis"``.
        self.disk = build_byte_store(config, self.store, self.clock)
        self.cache = ResponseCache(self.disk, config.cache, self.clock)
        self.idempotency = Idempotency(self.disk, self.clock)
        self.providers: dict[str, Provider] = {
            name: build_provider(name, cfg, env)
            for name, cfg in config.providers.items()
        }
        self.resources = {
            name: ProviderResources(
                bulkhead=Bulkhead(name, cfg.bulkhead, self.clock),
                budget=self.store.retry_budget(name, cfg.retry, self.clock),
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
            name: self.store.tenant_limiter(name, t.max_concurrent)
            for name, t in config.tenants.items()
        }
        self.routes: dict[tuple[str, str], Route] = {
            (tenant, alias): self._route(tenant, alias)
            for tenant in config.tenants
            for alias in config.models
        }
        self.metrics.watch(self)

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
                probes=self.store.probe_gate,
            )
            self.deployments[rung] = found
        return found

    def _on_transition(self, transition: Transition) -> None:
        try:
            self.store.on_transition(transition)
            self.metrics.on_transition(transition)
            log_transition(transition)
        except Exception:
            log.exception("recording a breaker transition failed")

    def on_request_end(self, ctx: RequestContext) -> None:
        """Record one finished request (request log and metrics read ``ctx``)."""
        try:
            self.metrics.record(ctx)
            log_request(ctx)
            if self.tracing is not None:
                self.tracing.record(ctx)
        except Exception:
            log.exception("recording request %s failed", ctx.request_id)

    def allowed(self, tenant: str) -> list[str]:
        """Return the aliases ``tenant`` may call, in config order."""
        allowed = self.config.tenants[tenant].models
        return [a for a in self.config.models if allowed is None or a in allowed]

    async def start(self) -> None:
        """Hand the live policy state to the store and start its sync, in the loop.

        A reload calls this after ``carry_state``, so the carried objects are
        the ones the new store keeps in step with the fleet.
        """
        providers = self.config.providers
        self.store.attach(
            breakers={
                name: (dep.breaker, providers[dep.provider.name].breaker)
                for name, dep in self.deployments.items()
            },
            budgets={name: res.budget for name, res in self.resources.items()},
            pauses=self.pauses,
            limiters=self.limiters,
        )
        await self.store.start()

    async def aclose(self) -> None:
        """Close every provider's connection pool, then the cache (writes drain)."""
        for provider in self.providers.values():
            await provider.aclose()
        await self.disk.aclose()
        await self.store.aclose()


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
