"""The Redis store's background tasks: publish, listen, sync counts, re-sync.

Beside the onion, in the serving event loop. Two tasks per replica:

* **sync**, woken by each queued event and at least every ``SYNC_S``: writes
  and publishes queued breaker transitions and pauses, adds the replica's new
  requests and retries to the fleet's per-second budget counters and reads the
  window back, and writes its tenants' calls in flight (under a lease, so a
  crashed replica's slots come back) while reading the others'.
* **listen**: subscribes to the fleet's channel and applies what other replicas
  publish; on (re)subscribing it first re-syncs: adopts the fleet's newer
  breaker records and pauses, and re-publishes this replica's open breakers
  and pauses, so a Redis that restarted empty learns them again.

Every Redis call goes through ``RedisLink.call``; a failure only means the
replica carries on with local state until Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import msgspec

from gateway.redislink import StoreDownError
from gateway.redisops import (
    PUBLISH_PAUSE,
    RECORD_TTL_S,
    RELEASE_PROBES,
    SYNC_BUDGET,
    SYNC_TENANT,
    TENANT_LEASE_S,
    FleetEvent,
    decode_event,
    encode_event,
)
from policies.breaker import BreakerState

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline

    from gateway.redisstore import RedisStore
    from policies.breaker import Breaker
    from policies.fleet import FleetRetryBudget, FleetTenantLimiter

log = logging.getLogger("fusebox.store")

#: How often counts are exchanged (and Redis's health is seen), at the latest.
SYNC_S: Final = 0.25
#: Wait before subscribing again after the subscription broke.
RESUBSCRIBE_S: Final = 0.25
#: The listener checks the link's health at least this often.
LISTEN_POLL_S: Final = 0.2
#: ``aclose`` waits this long for the tasks to end.
STOP_S: Final = 2.0
#: The retry budget's window (DESIGN.md §7: a sliding 10 s window).
BUDGET_WINDOW_S: Final = 10
_MS: Final = 1000


def known_since(breaker: Breaker) -> float:
    """Return since when ``breaker`` knows its state; the fleet's newer news wins.

    0 if it never changed state (anything is newer). A half-open breaker only
    knows that its open period ran out, so it counts from when it opened: a
    re-open or a close another replica saw since then is news to it.
    """
    history = breaker.history
    if not history:
        return 0.0
    if breaker.state is BreakerState.HALF_OPEN and len(history) > 1:
        return history[-2].at_wall
    return breaker.since_wall


class FleetSync:
    """The sync and listen tasks of one ``RedisStore``."""

    def __init__(self, store: RedisStore) -> None:
        """Bind to ``store``; nothing runs until ``start``."""
        self.store = store
        self.link = store.link
        self.keys = store.keys
        self._tasks: list[asyncio.Task[None]] = []
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        #: Per provider: (unix second, requests, retries) this replica shared.
        self._sent: dict[str, deque[tuple[int, int, int]]] = {}

    def start(self) -> None:
        """Start both tasks in the running loop."""
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks = [
            loop.create_task(self._run_sync(), name="fusebox-store-sync"),
            loop.create_task(self._run_listen(), name="fusebox-store-listen"),
        ]

    def wake(self) -> None:
        """Make the sync task publish now instead of at its next tick."""
        if self._wake is not None:
            self._wake.set()

    async def aclose(self) -> None:
        """Stop both tasks, then give back this replica's tenant slots."""
        if self._stopping is not None:
            self._stopping.set()
        self.wake()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            # A cancel that lands as a timeout expires can be swallowed (3.11):
            # the stop flag ends such a loop at its next turn instead.
            _, pending = await asyncio.wait(tasks, timeout=STOP_S)
            for task in pending:
                log.warning("store: task %s did not stop in time", task.get_name())
        if self.store.limiters and self.link.healthy:
            with contextlib.suppress(StoreDownError):
                await self.link.call(self._release_tenants, "tenant release")

    async def _idle(self, seconds: float, event: asyncio.Event | None) -> None:
        """Wait ``seconds`` of real time, or less if ``event`` is set."""
        if event is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()

    # The sync task.

    def _running(self) -> bool:
        return self._stopping is not None and not self._stopping.is_set()

    async def _run_sync(self) -> None:
        while self._running():
            if self._wake is not None:
                # Cleared before the tick: an event queued during it wakes the next.
                self._wake.clear()
            try:
                await self.tick()
            except StoreDownError:
                self._forget_others()
            except Exception:
                log.exception("store: the sync task failed; it carries on")
            await self._idle(SYNC_S, self._wake)

    async def tick(self) -> None:
        """Publish what is queued, then exchange counts with the fleet."""
        outbox = self.store.outbox
        if outbox:
            events = list(outbox)
            outbox.clear()
            await self.link.call(lambda c: self._publish(c, events), "publish")
        released = self.store.unsettled_claims()
        if released:
            await self.link.call(lambda c: self._release(c, released), "probe release")
        await self._sync_counts()

    async def _release(
        self, client: Redis, released: list[tuple[str, int, int]]
    ) -> None:
        pipe = client.pipeline(transaction=False)
        for deployment, period_ms, slots in released:
            await self.link.script(RELEASE_PROBES)(
                keys=[self.keys.probes(deployment, period_ms)],
                args=[slots],
                client=pipe,
            )
        await pipe.execute()

    async def _publish(self, client: Redis, events: list[FleetEvent]) -> None:
        pipe = client.pipeline(transaction=False)
        now = self.store.clock.wall()
        for event in events:
            raw = encode_event(event)
            if event.kind == "pause":
                ttl_ms = int(((event.until_wall or now) - now) * _MS)
                if ttl_ms > 0:
                    await self.link.script(PUBLISH_PAUSE)(
                        keys=[self.keys.pause(event.deployment)],
                        args=[raw, event.until_wall or now, ttl_ms, self.keys.channel],
                        client=pipe,
                    )
                continue
            if event.state != BreakerState.HALF_OPEN.value:
                # HALF_OPEN is announced only: the record keeps the open period.
                ends = max(event.until_wall or now, now)
                ttl_ms = int((ends - now + RECORD_TTL_S) * _MS)
                await pipe.set(self.keys.breaker(event.deployment), raw, px=ttl_ms)
            await pipe.publish(self.keys.channel, raw)
        await pipe.execute()

    async def _sync_counts(self) -> None:
        budgets = list(self.store.budgets.items())
        limiters = list(self.store.limiters.items())
        if not budgets and not limiters:
            await self.link.call(lambda c: c.ping(), "ping")
            return
        second = int(self.store.clock.wall())
        unsent = [budget.take_unsent() for _, budget in budgets]
        replies = await self.link.call(
            lambda c: self._count(c, second, budgets, unsent, limiters), "count sync"
        )
        for (name, budget), sent, reply in zip(budgets, unsent, replies, strict=False):
            self._adopt_budget(name, budget, second, sent, reply)
        for (_, limiter), reply in zip(limiters, replies[len(budgets) :], strict=True):
            limiter.others = int(reply)

    async def _count(
        self,
        client: Redis,
        second: int,
        budgets: list[tuple[str, FleetRetryBudget]],
        unsent: list[tuple[int, int]],
        limiters: list[tuple[str, FleetTenantLimiter]],
    ) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for (name, _), (requests, retries) in zip(budgets, unsent, strict=True):
            window = [
                self.keys.budget(name, second - i) for i in range(BUDGET_WINDOW_S)
            ]
            await self.link.script(SYNC_BUDGET)(
                keys=window,
                args=[requests, retries, BUDGET_WINDOW_S + 2],
                client=pipe,
            )
        await self._tenant_writes(pipe, limiters)
        return list(await pipe.execute())

    async def _tenant_writes(
        self, pipe: Pipeline, limiters: list[tuple[str, FleetTenantLimiter]]
    ) -> None:
        now_ms = int(self.store.clock.wall() * _MS)
        lease_ms = int(TENANT_LEASE_S * _MS)
        for tenant, limiter in limiters:
            await self.link.script(SYNC_TENANT)(
                keys=[self.keys.tenant(tenant)],
                args=[
                    self.store.replica,
                    f"{limiter.in_use}:{now_ms + lease_ms}",
                    now_ms,
                    lease_ms * 2,
                ],
                client=pipe,
            )

    def _adopt_budget(
        self,
        name: str,
        budget: FleetRetryBudget,
        second: int,
        sent: tuple[int, int],
        reply: Any,  # noqa: ANN401 - a Lua reply: [requests, retries]
    ) -> None:
        """Set the others' counts: the fleet's window minus what we shared in it."""
        history = self._sent.setdefault(name, deque())
        if history and history[-1][0] == second:
            _, requests, retries = history.pop()
            history.append((second, requests + sent[0], retries + sent[1]))
        elif sent != (0, 0):
            history.append((second, *sent))
        oldest = second - BUDGET_WINDOW_S + 1
        while history and history[0][0] < oldest:
            history.popleft()
        own_requests = sum(entry[1] for entry in history)
        own_retries = sum(entry[2] for entry in history)
        budget.set_others(int(reply[0]) - own_requests, int(reply[1]) - own_retries)

    def _forget_others(self) -> None:
        """Without Redis, each replica counts only itself (local state)."""
        for budget in self.store.budgets.values():
            budget.set_others(0, 0)
        for limiter in self.store.limiters.values():
            limiter.others = 0

    async def _release_tenants(self, client: Redis) -> None:
        pipe = client.pipeline(transaction=False)
        for tenant in self.store.limiters:
            await pipe.hdel(self.keys.tenant(tenant), self.store.replica)
        await pipe.execute()

    # The listen task.

    async def _run_listen(self) -> None:
        while self._running():
            if not self.link.is_open:
                try:
                    await self._listen()
                except StoreDownError:
                    pass
                except Exception as exc:
                    log.debug("store: the subscription broke: %r", exc)
            self.store.listening = False
            await self._idle(RESUBSCRIBE_S, self._stopping)

    async def _listen(self) -> None:
        pubsub = self.link.open().pubsub(ignore_subscribe_messages=True)
        try:
            await self.link.call(
                lambda _: pubsub.subscribe(self.keys.channel), "subscribe"
            )
            await self.resync()
            self.store.listening = True
            while self.link.healthy and self._running():
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=LISTEN_POLL_S
                )
                if message is not None and message.get("type") == "message":
                    self.store.apply(message["data"])
        finally:
            self.store.listening = False
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.link.timeout_s):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def resync(self) -> None:
        """Adopt the fleet's newer records; re-publish what only we still know."""
        names = list(self.store.breakers)

        async def read(client: Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for name in names:
                await pipe.get(self.keys.breaker(name))
                await pipe.get(self.keys.pause(name))
            return list(await pipe.execute())

        replies = await self.link.call(read, "resync")
        for i, name in enumerate(names):
            self._reconcile(self.store.breakers[name], replies[2 * i])
            pause = _decoded(replies[2 * i + 1])
            if pause is not None:
                self.store.adopt(pause)
        self._republish_pauses()
        self.wake()

    def _reconcile(self, breaker: Breaker, raw: bytes | None) -> None:
        """Adopt the fleet's newer record, else re-publish what this replica knows."""
        record = _decoded(raw)
        if record is not None and record.at_wall >= known_since(breaker):
            self.store.adopt(record)
            return
        state = breaker.state
        # Open here, or closed here since the fleet's record said open (the
        # CLOSED event was lost while Redis was away): the fleet should know.
        stale_open = record is not None and record.state == BreakerState.OPEN.value
        if state is BreakerState.OPEN or (state is BreakerState.CLOSED and stale_open):
            self.store.outbox.append(self.store.current_event(breaker))

    def _republish_pauses(self) -> None:
        pauses = self.store.pauses
        if pauses is None:
            return
        for pause in pauses.snapshot().values():
            self.store.outbox.append(
                FleetEvent(
                    origin=self.store.replica,
                    kind="pause",
                    deployment=pause.deployment,
                    until_wall=pause.until_wall,
                    at_wall=self.store.clock.wall(),
                    reason=pause.reason,
                )
            )


def _decoded(raw: bytes | None) -> FleetEvent | None:
    if raw is None:
        return None
    try:
        return decode_event(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
