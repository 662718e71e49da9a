"""The store seam: where the state that replicas may share lives.

Every policy object that holds shared state (retry budgets, the 429 pause
board, tenant limiters) is made by the store, and at startup the ``Runtime``
attaches them and its breakers to it, so it never needs to know which backend
it runs on. Two backends
implement ``Store``:

* ``LocalStore`` (here): today's in-process state; the embedded default,
  needing nothing.
* ``gateway.redisstore.RedisStore``: the same local objects (their fleet-aware
  variants from ``policies.fleet``) kept in step with other replicas by
  background tasks over Redis.

Hot-path decisions always read local memory. The one store call a request may
await is ``ProbeGate.claim_probe``, made only by the few calls that would be
half-open probes, and bounded by the store's own short timeout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Protocol

from policies.budget import RetryBudget
from policies.bulkhead import TenantLimiter
from policies.pause import PauseBoard

if TYPE_CHECKING:
    from collections.abc import Mapping

    from policies.breaker import Breaker, Transition
    from policies.clock import Clock
    from policies.config import BreakerConfig, RetryConfig

LOCAL: Final = "local"


class ProbeGate(Protocol):
    """Decides, for the fleet, whether a half-open probe may go out."""

    async def claim_probe(self, deployment: str, lease_s: float) -> bool:
        """Claim one of the fleet's probe slots for ``deployment``'s open period.

        Args:
            deployment: ``provider/model``.
            lease_s: How long the claim holds if its replica never settles it.

        Returns:
            Whether this replica may send the probe; False means: treat the
            breaker as open.
        """
        ...


class Store(Protocol):
    """Where breakers, budgets, pauses and tenant shares are kept."""

    #: ``"local"`` or ``"redis"``.
    kind: str

    @property
    def healthy(self) -> bool:
        """Whether the store is reachable (the local store always is)."""
        ...

    @property
    def probe_gate(self) -> ProbeGate | None:
        """The fleet's probe gate, or None when each breaker decides alone."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """Describe the store for ``/fusebox/status``: at least kind and healthy."""
        ...

    def retry_budget(
        self, provider: str, config: RetryConfig, clock: Clock
    ) -> RetryBudget:
        """Make the retry budget of ``provider``."""
        ...

    def pause_board(self, clock: Clock) -> PauseBoard:
        """Make the 429 pause board."""
        ...

    def tenant_limiter(self, tenant: str, max_concurrent: int | None) -> TenantLimiter:
        """Make ``tenant``'s concurrency share (None: unlimited)."""
        ...

    def attach(
        self,
        *,
        breakers: Mapping[str, tuple[Breaker, BreakerConfig]],
        budgets: Mapping[str, RetryBudget],
        pauses: PauseBoard,
        limiters: Mapping[str, TenantLimiter],
    ) -> None:
        """Keep these live objects in step with the fleet, from now on.

        Called before ``start``. The objects may come from an older store (a
        config reload carries breakers, budgets, pauses and limiters over);
        ones this backend cannot share stay local.

        Args:
            breakers: Per deployment, its breaker and its settings.
            budgets: Per provider, its retry budget.
            pauses: The 429 pause board.
            limiters: Per tenant, its concurrency share.
        """
        ...

    def on_transition(self, transition: Transition) -> None:
        """Share one local breaker transition; must not raise or block."""
        ...

    async def start(self) -> None:
        """Start whatever runs beside the hot path (inside the event loop)."""
        ...

    async def detach(self) -> None:
        """Stop sharing the attached objects: a newer store took them over.

        A config reload calls it on the old runtime's store; its connections
        stay open for the requests still finishing there, until ``aclose``.
        """
        ...

    async def aclose(self) -> None:
        """Stop sharing (if still) and let go of connections."""
        ...


class LocalStore:
    """In-process state only: every replica (worker) decides on its own."""

    kind = LOCAL

    @property
    def healthy(self) -> bool:
        """Always True: memory is always there."""
        return True

    @property
    def probe_gate(self) -> ProbeGate | None:
        """None: each breaker's own ``half_open_probes`` is the whole rule."""
        return None

    def snapshot(self) -> dict[str, Any]:
        """Return ``{"kind": "local", "healthy": True}``."""
        return {"kind": LOCAL, "healthy": True}

    def retry_budget(
        self,
        provider: str,  # noqa: ARG002 - the seam names it; memory needs no key
        config: RetryConfig,
        clock: Clock,
    ) -> RetryBudget:
        """Make a plain per-process retry budget."""
        return RetryBudget(config.budget_ratio, config.budget_min_per_s, clock)

    def pause_board(self, clock: Clock) -> PauseBoard:
        """Make a plain per-process pause board."""
        return PauseBoard(clock)

    def tenant_limiter(
        self,
        tenant: str,  # noqa: ARG002 - the seam names it; memory needs no key
        max_concurrent: int | None,
    ) -> TenantLimiter:
        """Make a plain per-process tenant limiter."""
        return TenantLimiter(max_concurrent)

    def attach(
        self,
        *,
        breakers: Mapping[str, tuple[Breaker, BreakerConfig]],
        budgets: Mapping[str, RetryBudget],
        pauses: PauseBoard,
        limiters: Mapping[str, TenantLimiter],
    ) -> None:
        """Do nothing: there is no one else to hear from."""

    def on_transition(self, transition: Transition) -> None:
        """Do nothing: there is no one else to tell."""

    async def start(self) -> None:
        """Do nothing."""

    async def detach(self) -> None:
        """Do nothing."""

    async def aclose(self) -> None:
        """Do nothing."""
