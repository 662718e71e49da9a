"""The Redis store: local policy state, kept in step with the fleet beside the hot path.

Implements ``policies.store.Store`` for ``store.kind = "redis"``. Requests
still decide from local memory: the budgets, pause board and tenant limiters
are ``policies.fleet`` objects whose view of the other replicas is refreshed
by ``gateway.redissync`` every ``SYNC_S``; breaker transitions and pauses are
queued here, written and published by the sync task, and applied from pub/sub
with ``Breaker.force``. The only awaited call on a request path is
``claim_probe``, made by calls that would be half-open probes, bounded by the
link's timeout; when Redis is down it is skipped and the local breaker decides.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import msgspec

from gateway.redislink import RedisLink, StoreDownError
from gateway.redisops import CLAIM_PROBE, FleetEvent, Keys, decode_event
from gateway.redissync import FleetSync, known_since
from policies.breaker import BreakerState
from policies.fleet import FleetPauseBoard, FleetRetryBudget, FleetTenantLimiter

if TYPE_CHECKING:
    from collections.abc import Mapping

    from redis.asyncio import Redis

    from gateway.config import StoreConfig
    from policies.breaker import Breaker, Transition
    from policies.budget import RetryBudget
    from policies.bulkhead import TenantLimiter
    from policies.clock import Clock
    from policies.config import BreakerConfig, RetryConfig
    from policies.pause import PauseBoard
    from policies.store import ProbeGate

log = logging.getLogger("fusebox.store")

#: Events waiting to be published; beyond this the oldest are dropped (a
#: resync re-publishes what is still true).
OUTBOX_MAX: Final = 1000
#: After the fleet's probe slots were found taken, ask again only after this.
PROBE_DENIED_HOLD_S: Final = 1.0


def replica_id() -> str:
    """Return a name for this process that no other replica shares."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RedisStore:
    """Breakers, budgets, pauses and tenant shares shared through Redis."""

    kind = "redis"

    def __init__(
        self, config: StoreConfig, clock: Clock, *, replica: str | None = None
    ) -> None:
        """Prepare the store; nothing connects until ``start``."""
        if not config.url:
            raise ValueError('store.url is required when store.kind = "redis"')
        self.replica = replica or replica_id()
        self.keys = Keys(config.prefix)
        self.link = RedisLink(config.url, clock, timeout_s=config.timeout_s)
        self.clock = clock
        self.breakers: dict[str, Breaker] = {}
        self.probes_allowed: dict[str, int] = {}
        self.budgets: dict[str, FleetRetryBudget] = {}
        self.limiters: dict[str, FleetTenantLimiter] = {}
        self.pauses: FleetPauseBoard | None = None
        self.outbox: deque[FleetEvent] = deque(maxlen=OUTBOX_MAX)
        #: True while subscribed to the fleet's events.
        self.listening = False
        self._probe_denied: dict[str, float] = {}
        #: Per deployment: (open period, probe slots this replica holds in it).
        self._claims: dict[str, tuple[int, int]] = {}
        self._closed = False
        self._sync = FleetSync(self)

    @property
    def healthy(self) -> bool:
        """Whether Redis answers and this replica hears the fleet's events."""
        return self.link.healthy and self.listening

    @property
    def probe_gate(self) -> ProbeGate | None:
        """This store: half-open probes are claimed fleet-wide."""
        return self

    def snapshot(self) -> dict[str, Any]:
        """Describe the store for ``/fusebox/status``."""
        reason = self.link.reason
        if reason is None and not self.listening:
            reason = "not subscribed to the fleet's events"
        return {
            "kind": self.kind,
            "healthy": self.healthy,
            "reason": reason,
            "replica": self.replica,
        }

    def retry_budget(
        self,
        provider: str,  # noqa: ARG002 - attach() names it
        config: RetryConfig,
        clock: Clock,
    ) -> FleetRetryBudget:
        """Make a provider's budget, counted fleet-wide once attached."""
        return FleetRetryBudget(config.budget_ratio, config.budget_min_per_s, clock)

    def pause_board(self, clock: Clock) -> FleetPauseBoard:
        """Make the pause board whose pauses every replica honours once attached."""
        return FleetPauseBoard(clock, self._on_pause)

    def tenant_limiter(
        self,
        tenant: str,  # noqa: ARG002 - attach() names it
        max_concurrent: int | None,
    ) -> FleetTenantLimiter:
        """Make a tenant's share, counted across replicas once attached."""
        return FleetTenantLimiter(max_concurrent)

    def attach(
        self,
        *,
        breakers: Mapping[str, tuple[Breaker, BreakerConfig]],
        budgets: Mapping[str, RetryBudget],
        pauses: PauseBoard,
        limiters: Mapping[str, TenantLimiter],
    ) -> None:
        """Share these objects from now on (plain local ones stay local)."""
        self.breakers = {name: pair[0] for name, pair in breakers.items()}
        self.probes_allowed = {
            name: pair[1].half_open_probes for name, pair in breakers.items()
        }
        self.budgets = {
            name: budget
            for name, budget in budgets.items()
            if isinstance(budget, FleetRetryBudget)
        }
        self.limiters = {
            name: limiter
            for name, limiter in limiters.items()
            if isinstance(limiter, FleetTenantLimiter) and limiter.limit is not None
        }
        if isinstance(pauses, FleetPauseBoard):
            # A reload may carry a board an older store made: its pauses go here now.
            pauses.listener = self._on_pause
            self.pauses = pauses

    def on_transition(self, transition: Transition) -> None:
        """Queue a local transition for the fleet (remote ones are not echoed)."""
        # A new state is a new open period (or none): its probe slots are new too.
        self._probe_denied.pop(transition.deployment, None)
        self._claims.pop(transition.deployment, None)
        if transition.is_remote:
            return
        self.enqueue(
            FleetEvent(
                origin=self.replica,
                kind="breaker",
                deployment=transition.deployment,
                state=transition.to_state.value,
                until_wall=transition.retry_at_wall,
                at_wall=transition.at_wall,
                reason=transition.reason,
            )
        )

    def _on_pause(self, deployment: str, until_wall: float, reason: str) -> None:
        self.enqueue(
            FleetEvent(
                origin=self.replica,
                kind="pause",
                deployment=deployment,
                until_wall=until_wall,
                at_wall=self.clock.wall(),
                reason=reason,
            )
        )

    def enqueue(self, event: FleetEvent) -> None:
        """Hand ``event`` to the sync task, which publishes it at once."""
        self.outbox.append(event)
        self._sync.wake()

    async def claim_probe(self, deployment: str, lease_s: float) -> bool:
        """Claim a fleet-wide probe slot; without Redis the local breaker decides."""
        now = self.clock.monotonic()
        if now < self._probe_denied.get(deployment, 0.0):
            return False
        if self._closed or self.link.is_open:
            return True
        try:
            granted, period_ms = await self.link.call(
                lambda client: self._claim(client, deployment, lease_s), "probe claim"
            )
        except StoreDownError:
            return True
        if granted:
            self._hold(deployment, period_ms)
        elif period_ms > 0:
            self._force_open(deployment, period_ms / 1000.0)
        else:
            self._probe_denied[deployment] = now + PROBE_DENIED_HOLD_S
        return bool(granted)

    def _hold(self, deployment: str, period_ms: int) -> None:
        if period_ms <= 0:
            return
        held = self._claims.get(deployment)
        count = held[1] + 1 if held is not None and held[0] == period_ms else 1
        self._claims[deployment] = (period_ms, count)

    def unsettled_claims(self) -> list[tuple[str, int, int]]:
        """Return (deployment, period, slots) of probes that ended without a verdict.

        A probe with a verdict moves its breaker (and drops its claim); one
        released without (a client hung up, a 429) leaves the breaker half-open
        with fewer probes out than this replica holds slots: those go back.
        """
        settled: list[tuple[str, int, int]] = []
        for deployment, (period_ms, count) in list(self._claims.items()):
            breaker = self.breakers.get(deployment)
            out = 0
            if breaker is not None and breaker.state is BreakerState.HALF_OPEN:
                out = breaker.probes_out
            if out < count:
                settled.append((deployment, period_ms, count - out))
                if out:
                    self._claims[deployment] = (period_ms, out)
                else:
                    del self._claims[deployment]
        return settled

    async def _claim(self, client: Redis, deployment: str, lease_s: float) -> Any:  # noqa: ANN401 - Lua replies are untyped
        probes = self.probes_allowed.get(deployment, 1)
        lease_ms = max(int(lease_s * 1000), 1)
        now_ms = int(self.clock.wall() * 1000)
        reply = await self.link.script(CLAIM_PROBE)(
            keys=[self.keys.breaker(deployment)],
            args=[probes, lease_ms, now_ms],
            client=client,
        )
        return int(reply[0]), int(reply[1])

    def _force_open(self, deployment: str, until_wall: float) -> None:
        breaker = self.breakers.get(deployment)
        if breaker is not None:
            breaker.force(
                BreakerState.OPEN,
                until_wall=until_wall,
                reason="another replica re-opened it",
                notify=True,
            )

    def apply(self, raw: bytes) -> None:
        """Apply one event heard on the fleet's channel (our own are skipped)."""
        try:
            event = decode_event(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.debug("store: ignored a malformed fleet event: %r", raw[:200])
            return
        if event.origin != self.replica:
            self.adopt(event)

    def adopt(self, event: FleetEvent) -> None:
        """Apply a breaker transition or pause another replica saw."""
        if event.kind == "pause":
            if self.pauses is not None and event.until_wall is not None:
                self.pauses.adopt(event.deployment, event.until_wall, _via(event))
            return
        breaker = self.breakers.get(event.deployment)
        if breaker is None or event.at_wall < known_since(breaker):
            # Unknown here, or older than what this breaker already knows.
            return
        reason = _via(event)
        if event.state == BreakerState.OPEN.value and event.until_wall is not None:
            if event.until_wall > self.clock.wall():
                breaker.force(
                    BreakerState.OPEN,
                    until_wall=event.until_wall,
                    reason=reason,
                    notify=True,
                )
        elif event.state == BreakerState.CLOSED.value:
            breaker.force(
                BreakerState.CLOSED, until_wall=None, reason=reason, notify=True
            )

    def current_event(self, breaker: Breaker) -> FleetEvent:
        """Describe ``breaker``'s present state as an event (for a re-publish)."""
        return FleetEvent(
            origin=self.replica,
            kind="breaker",
            deployment=breaker.name,
            state=breaker.state.value,
            until_wall=breaker.retry_at_wall,
            at_wall=breaker.since_wall,
            reason=breaker.reason,
        )

    async def start(self) -> None:
        """Start the sync and listen tasks (in the serving event loop)."""
        self._sync.start()

    async def detach(self) -> None:
        """Stop the tasks and give back this replica's tenant slots; stay connected."""
        await self._sync.aclose()

    async def aclose(self) -> None:
        """Stop the tasks, give back this replica's tenant slots, disconnect."""
        self._closed = True
        await self._sync.aclose()
        await self.link.aclose()


def _via(event: FleetEvent) -> str:
    """Return the event's reason, naming the replica that saw it (once)."""
    if "(via " in event.reason:
        return event.reason
    return f"{event.reason} (via {event.origin})"
