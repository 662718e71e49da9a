"""Prometheus metrics: one registry per ``Runtime``, recorded once per request.

``Metrics.record(ctx)`` runs on every finished chat request, so it only bumps
plain ``dict`` counters and histogram arrays (no locks: requests and scrapes
both run on the event loop); a custom collector turns them into metric
families at scrape time. Gauges that mirror live state (breaker state,
bulkhead fill, retry budget) are read from the runtime at scrape time too, so
nothing updates them on the hot path.

A reload that builds a new ``Runtime`` keeps the counters by handing the old
``Metrics`` to it and calling ``metrics.watch(new_runtime)``.
"""

from __future__ import annotations

from bisect import bisect_left
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Info
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from policies.breaker import BreakerState

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric

    from gateway.request import RequestContext
    from gateway.runtime import Runtime
    from policies.breaker import Transition

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

#: Whole-request latency of an LLM call: tens of ms (cache) to minutes (long answers).
DURATION_BUCKETS: Final = (
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0,
)  # fmt: skip
#: Time to the first streamed byte: mostly under a few seconds.
TTFT_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0,
)  # fmt: skip
#: ``fusebox_breaker_state`` values.
STATE_VALUE: Final = {
    BreakerState.CLOSED: 0.0,
    BreakerState.HALF_OPEN: 1.0,
    BreakerState.OPEN: 2.0,
}
#: Trail tokens that are not an upstream attempt of their own.
_NOT_ATTEMPTS: Final = frozenset({"budget", "cut"})
_STATUS_CLASS: Final = {n: f"{n}xx" for n in range(1, 6)}

Key = tuple[str, ...]


def _version() -> str:
    try:
        return version("fusebox-gateway")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def status_class(status: int | None) -> str:
    """Return ``2xx``/``4xx``/``5xx`` for ``status``; ``none`` when nothing was sent."""
    if status is None:
        return "none"
    return _STATUS_CLASS.get(status // 100, "none")


def _bump(values: dict[Key, float], key: Key, amount: float = 1.0) -> None:
    values[key] = values.get(key, 0.0) + amount


class CounterTable:
    """One counter family: label values → count."""

    __slots__ = ("doc", "labels", "name", "values")

    def __init__(self, name: str, doc: str, *labels: str) -> None:
        """Name the family (without ``_total``) and its labels."""
        self.name = name
        self.doc = doc
        self.labels = labels
        self.values: dict[Key, float] = {}

    def family(self) -> CounterMetricFamily:
        """Return the family with every series counted so far."""
        fam = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in list(self.values.items()):
            fam.add_metric(key, value)
        return fam


class Histo:
    """One histogram series: per-bucket counts (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        """Start empty, with one more bucket than bounds (``+Inf``)."""
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        """Return the cumulative ``(le, count)`` pairs, ``+Inf`` last."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(
            (*map(str, self.bounds), "+Inf"), self.counts, strict=True
        ):
            running += count
            out.append((bound, running))
        return out


class HistoTable:
    """One histogram family: label values → ``Histo``."""

    __slots__ = ("bounds", "doc", "labels", "name", "series")

    def __init__(
        self, name: str, doc: str, bounds: tuple[float, ...], *labels: str
    ) -> None:
        """Name the family, its buckets and labels."""
        self.name = name
        self.doc = doc
        self.bounds = bounds
        self.labels = labels
        self.series: dict[Key, Histo] = {}

    def get(self, key: Key) -> Histo:
        """Return the series for ``key``, created on first use."""
        found = self.series.get(key)
        if found is None:
            found = self.series[key] = Histo(self.bounds)
        return found

    def family(self) -> HistogramMetricFamily:
        """Return the family with every series observed so far."""
        fam = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for key, histo in list(self.series.items()):
            fam.add_metric(list(key), histo.buckets(), histo.total)
        return fam


class Metrics:
    """Every Fusebox metric, on a registry of its own (tests build many apps)."""

    def __init__(self) -> None:
        """Create the tables and a registry that reads them at scrape time."""
        self._traffic()
        self._counters()
        self._aliases: frozenset[str] = frozenset()
        self.state = _StateCollector(self)
        self.registry = CollectorRegistry()
        self.registry.register(self.state)
        Info("fusebox_build", "Fusebox version.", registry=self.registry).info(
            {"version": _version()}
        )

    def _traffic(self) -> None:
        self.requests = CounterTable(
            "fusebox_requests",
            "Finished chat requests by tenant, alias, served rung and status class.",
            *("tenant", "alias", "served_by", "code"),
        )
        self.attempts = CounterTable(
            "fusebox_upstream_attempts",
            "Upstream attempts by deployment and x-fusebox-attempts token.",
            *("deployment", "outcome"),
        )
        self.duration = HistoTable(
            "fusebox_request_duration_seconds",
            "Chat request duration, arrival to last byte.",
            DURATION_BUCKETS,
            *("alias", "stream"),
        )
        self.ttft = HistoTable(
            "fusebox_time_to_first_token_seconds",
            "Streamed chat requests: arrival to the first byte sent to the client.",
            TTFT_BUCKETS,
            "alias",
        )

    def _counters(self) -> None:
        self.transitions = CounterTable(
            "fusebox_breaker_transitions",
            "Breaker state changes.",
            *("deployment", "from_state", "to_state"),
        )
        self.pauses = CounterTable(
            "fusebox_pauses", "429 answers that paused a deployment.", "deployment"
        )
        self.retries = CounterTable(
            "fusebox_retries", "Retries granted by the retry budget.", "provider"
        )
        self.budget_exhausted = CounterTable(
            "fusebox_retry_budget_exhausted",
            "Retries refused because the provider's retry budget was empty.",
            "provider",
        )
        self.degraded = CounterTable(
            "fusebox_degraded",
            "Answers not served by the first rung, by serving rung and kind.",
            *("rung", "kind"),
        )
        self.cache_hits = CounterTable(
            "fusebox_cache_hits", "Answers served from the cache.", "kind"
        )
        self.tokens = CounterTable(
            "fusebox_tokens",
            "Tokens reported by upstreams, by deployment and direction.",
            *("deployment", "direction"),
        )

    def tables(self) -> list[CounterTable | HistoTable]:
        """Return every table, in exposition order."""
        return [
            self.requests,
            self.attempts,
            self.duration,
            self.ttft,
            self.transitions,
            self.pauses,
            self.retries,
            self.budget_exhausted,
            self.degraded,
            self.cache_hits,
            self.tokens,
        ]

    def watch(self, runtime: Runtime) -> None:
        """Read live state (breakers, bulkheads, budgets) from ``runtime`` at scrape."""
        self.state.runtime = runtime
        self._aliases = frozenset(runtime.config.models)

    def expose(self) -> bytes:
        """Return the registry in Prometheus text format."""
        return generate_latest(self.registry)

    def on_transition(self, transition: Transition) -> None:
        """Count one breaker transition."""
        key = (
            transition.deployment,
            transition.from_state.value,
            transition.to_state.value,
        )
        _bump(self.transitions.values, key)

    def record(self, ctx: RequestContext) -> None:
        """Count one finished chat request: totals, latency, attempts, tokens."""
        alias = ctx.alias if ctx.alias in self._aliases else "unknown"
        served_by = ctx.served_by or "none"
        key = (ctx.tenant or "none", alias, served_by, status_class(ctx.status))
        _bump(self.requests.values, key)
        started = ctx.started
        elapsed = ctx.clock.monotonic() - started
        self.duration.get((alias, "true" if ctx.stream else "false")).observe(elapsed)
        if ctx.stream and ctx.first_byte_at is not None:
            self.ttft.get((alias,)).observe(ctx.first_byte_at - started)
        if ctx.trail:
            self._record_trail(ctx.trail)
        if ctx.degraded is not None:
            _bump(self.degraded.values, (served_by, ctx.degraded))
        if ctx.cache_age_s is not None:
            _bump(self.cache_hits.values, ("stale" if ctx.degraded else "fresh",))
        usage = ctx.usage
        if usage is not None and served_by[0] != "@":
            tokens = self.tokens.values
            _bump(tokens, (served_by, "input"), usage.prompt_tokens)
            _bump(tokens, (served_by, "output"), usage.completion_tokens)

    def _record_trail(self, trail: dict[str, list[str]]) -> None:
        attempts = self.attempts.values
        for deployment, outcomes in trail.items():
            if deployment[0] == "@":
                continue
            tried = 0
            for outcome in outcomes:
                _bump(attempts, (deployment, outcome))
                if outcome == "429":
                    _bump(self.pauses.values, (deployment,))
                elif outcome == "budget":
                    provider = deployment.partition("/")[0]
                    _bump(self.budget_exhausted.values, (provider,))
                if outcome not in _NOT_ATTEMPTS:
                    tried += 1
            if tried > 1:
                provider = deployment.partition("/")[0]
                _bump(self.retries.values, (provider,), tried - 1)


class _StateCollector:
    """The counter tables, and gauges of live state read from the runtime."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.runtime: Runtime | None = None

    def describe(self) -> list[Metric]:
        """Describe nothing up front (the families depend on the config)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield the tables, then breaker, pause, bulkhead and budget families."""
        for table in self.metrics.tables():
            yield table.family()
        runtime = self.runtime
        if runtime is None:
            return
        yield from _deployment_families(runtime)
        yield from _provider_families(runtime)


def _deployment_families(runtime: Runtime) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        "fusebox_breaker_state",
        "Breaker state per deployment: 0 closed, 1 half-open, 2 open.",
        labels=("deployment",),
    )
    paused = GaugeMetricFamily(
        "fusebox_deployment_paused",
        "1 while a deployment is paused after a 429, else 0.",
        labels=("deployment",),
    )
    pauses = runtime.pauses.snapshot()
    for name, dep in runtime.deployments.items():
        state.add_metric((name,), STATE_VALUE[dep.breaker.state])
        paused.add_metric((name,), 1.0 if name in pauses else 0.0)
    yield state
    yield paused


def _provider_families(runtime: Runtime) -> Iterator[Metric]:
    labels = ("provider",)
    in_use = GaugeMetricFamily(
        "fusebox_bulkhead_in_use", "Bulkhead slots in use.", labels=labels
    )
    waiting = GaugeMetricFamily(
        "fusebox_bulkhead_waiting", "Calls queued for a bulkhead slot.", labels=labels
    )
    limit = GaugeMetricFamily(
        "fusebox_bulkhead_max_concurrent", "Bulkhead size.", labels=labels
    )
    rejected = CounterMetricFamily(
        "fusebox_bulkhead_rejected", "Calls refused by a full bulkhead.", labels=labels
    )
    budget = GaugeMetricFamily(
        "fusebox_retry_budget_available",
        "Retries the provider's retry budget would grant now.",
        labels=labels,
    )
    for name, res in runtime.resources.items():
        bulkhead = res.bulkhead
        in_use.add_metric((name,), bulkhead.in_use)
        waiting.add_metric((name,), bulkhead.waiting)
        limit.add_metric((name,), bulkhead.max_concurrent)
        rejected.add_metric((name,), bulkhead.rejected)
        budget.add_metric((name,), res.budget.available)
    yield from (in_use, waiting, limit, rejected, budget)
