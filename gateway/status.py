"""``GET /fusebox/status``: every breaker, pause, bulkhead and retry budget, as JSON.

DESIGN.md §7 fixes the shape; times are unix seconds from the runtime's clock.
``GET /fusebox/`` serves ``static/status.html``, a page that fetches this
document every two seconds and draws one row per deployment.
"""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from gateway.readiness import StoreHealth
    from gateway.runtime import Runtime
    from policies.breaker import Breaker, Transition
    from policies.pipeline import ProviderResources

#: How many recent transitions each deployment reports.
HISTORY: Final = 10


@functools.cache
def status_page() -> bytes:
    """Return the status page (self-contained HTML, CSS and script)."""
    return files("gateway").joinpath("static/status.html").read_bytes()


def status_document(
    runtime: Runtime, store: StoreHealth, not_ready: str | None
) -> dict[str, Any]:
    """Describe the runtime's live state (DESIGN.md §7 "Status JSON")."""
    config = runtime.config
    return {
        "time": runtime.clock.wall(),
        "started_at": runtime.started_wall,
        "ready": not_ready is None,
        "not_ready_reason": not_ready,
        "draining": runtime.draining,
        "deployments": deployments_status(runtime),
        "providers": {
            name: provider_status(runtime, name, res)
            for name, res in runtime.resources.items()
        },
        "store": {
            **runtime.store.snapshot(),  # e.g. the replica id of a Redis store
            "kind": config.store.kind,
            "healthy": store.healthy,
            "reason": store.reason,
        },
        "cache": {"fresh_s": config.cache.fresh_s, "stale_s": config.cache.stale_s},
    }


def deployments_status(runtime: Runtime) -> dict[str, Any]:
    """Describe every deployment: its breaker and its 429 pause."""
    pauses = runtime.pauses.snapshot()
    out: dict[str, Any] = {}
    for name, dep in runtime.deployments.items():
        pause = pauses.get(name)
        out[name] = {
            "provider": dep.provider.name,
            "model": dep.model,
            "breaker": breaker_status(dep.breaker),
            "paused_until": None if pause is None else pause.until_wall,
            "pause_reason": None if pause is None else pause.reason,
        }
    return out


def breaker_status(breaker: Breaker) -> dict[str, Any]:
    """Describe one breaker: state, why, since when, next probe, window, history."""
    return {
        "state": breaker.state.value,
        "reason": breaker.reason,
        "since": breaker.since_wall,
        "retry_at": breaker.retry_at_wall,
        "calls": breaker.calls,
        "failure_rate": breaker.failure_rate,
        "slow_rate": breaker.slow_rate,
        "open_s_current": breaker.open_s_current,
        "history": [transition_status(t) for t in list(breaker.history)[-HISTORY:]],
    }


def transition_status(transition: Transition) -> dict[str, Any]:
    """Describe one breaker transition."""
    return {
        "from": transition.from_state.value,
        "to": transition.to_state.value,
        "reason": transition.reason,
        "at": transition.at_wall,
        "retry_at": transition.retry_at_wall,
        "remote": transition.is_remote,
    }


def provider_status(
    runtime: Runtime, name: str, res: ProviderResources
) -> dict[str, Any]:
    """Describe one provider's bulkhead and retry budget."""
    cfg = runtime.config.providers[name]
    bulkhead = res.bulkhead
    budget = res.budget
    return {
        "kind": type(cfg).__struct_config__.tag,
        "bulkhead": {
            "in_use": bulkhead.in_use,
            "waiting": bulkhead.waiting,
            "max_concurrent": bulkhead.max_concurrent,
            "max_waiting": cfg.bulkhead.max_waiting,
            "rejected": bulkhead.rejected,
        },
        "retry_budget": {
            "available": budget.available,
            "requests": budget.requests,
            "retries": budget.retries,
            "ratio": cfg.retry.budget_ratio,
            "min_per_s": cfg.retry.budget_min_per_s,
        },
    }
