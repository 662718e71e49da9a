"""Policy settings: the ``[defaults.*]`` tables and their per-provider overrides.

They live here, beside the policies that read them, so the gateway's config
module can import them without ``policies`` ever importing ``gateway``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

Seconds = Annotated[float, msgspec.Meta(gt=0)]
NonNegSeconds = Annotated[float, msgspec.Meta(ge=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Rate = Annotated[float, msgspec.Meta(gt=0, le=1)]


class Frozen(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every config node: immutable, hashable, typo-proof."""


class TimeoutsConfig(Frozen, frozen=True):
    """Per-attempt timeouts, each capped by the request's time left."""

    connect_s: Seconds = 3.0
    first_token_s: Seconds = 20.0
    read_s: Seconds = 30.0
    attempt_s: Seconds = 120.0


class RetryConfig(Frozen, frozen=True):
    """Retries on the same deployment, with full jitter and a retry budget."""

    attempts: PositiveInt = 3
    base_s: Seconds = 0.25
    max_s: Seconds = 8.0
    max_retry_after_s: NonNegSeconds = 20.0
    budget_ratio: Annotated[float, msgspec.Meta(ge=0, le=10)] = 0.2
    budget_min_per_s: Annotated[float, msgspec.Meta(ge=0)] = 2.0


class BreakerConfig(Frozen, frozen=True):
    """The circuit breaker of each deployment."""

    window_s: Seconds = 30.0
    min_calls: PositiveInt = 5
    failure_rate: Rate = 0.5
    slow_s: Seconds = 30.0
    slow_rate: Rate = 0.8
    open_s: Seconds = 10.0
    max_open_s: Seconds = 300.0
    half_open_probes: PositiveInt = 1


class BulkheadConfig(Frozen, frozen=True):
    """The bulkhead of each provider: in-flight calls and a bounded queue."""

    max_concurrent: PositiveInt = 100
    max_waiting: Annotated[int, msgspec.Meta(ge=0)] = 100
    wait_s: NonNegSeconds = 0.5
