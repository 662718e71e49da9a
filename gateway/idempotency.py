"""Idempotency keys: a repeated request gets the first one's answer, not a new call.

In the onion this sits inside the tenant bulkhead and around everything the
request does (fresh cache, deadline, chain). A request with an
``Idempotency-Key`` header is one *flight* per (tenant, key):

* the first runs as usual; if it gets a live answer, that answer is kept on
  disk for 24 h with the fingerprint of its whole body (``stream`` included);
* a repeat that arrives while the first is still running waits for it (no
  longer than its own deadline) instead of calling an upstream again;
* a repeat with the same body gets the kept answer, as JSON or re-streamed,
  with ``x-fusebox-idempotent-replay: true``; another body gets 422;
* a first request that failed (or was degraded to ``@cache`` / ``@static``)
  keeps nothing, so a retry runs again.

Chat completions and ``/v1/messages`` take keys, each endpoint in its own
namespace (a chat request never gets a Messages answer), each answer kept in
its own API's format.

Waiting is coordinated in process (one ``asyncio.Future`` per flight); the disk
record is what makes replays survive a restart and reach other workers.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec

from gateway.diskstore import digest
from providers.errors import (
    DeadlineExceededError,
    GatewayError,
    IdempotencyConflictError,
    InvalidRequestError,
)

if TYPE_CHECKING:
    from gateway.request import RequestContext
    from gateway.store import ByteStore
    from policies.clock import Clock
    from policies.deadline import Deadline

#: How long a kept answer answers repeats of its key.
TTL_S: Final = 86400.0
#: Longest accepted ``Idempotency-Key``.
MAX_KEY_CHARS: Final = 255

#: The endpoints that take an ``Idempotency-Key``.
ENDPOINTS: Final = frozenset({"chat", "messages"})

#: (tenant, key), and the endpoint for any endpoint but chat.
Slot = tuple[str, ...]


class IdempotencyRecord(msgspec.Struct, frozen=True, array_like=True):
    """A kept answer: the request's fingerprint, the completion, when, and who."""

    fingerprint: str
    body: bytes
    created_wall: float
    served_by: str


_encode: Final = msgspec.msgpack.Encoder().encode
_decode: Final = msgspec.msgpack.Decoder(IdempotencyRecord).decode


class Replayable(Protocol):
    """What idempotency needs from one request (``gateway.chat.Exchange``)."""

    ctx: RequestContext
    deadline: Deadline
    #: The client's JSON body.
    payload: dict[str, Any]
    #: Set before ``serve``: keep the live answer in ``answer``.
    keeps_answer: bool
    #: After ``serve``: the live answer as stored (its API's JSON), if there was one.
    answer: bytes | None

    async def serve(self) -> None:
        """Run the request and send its answer or error."""
        ...

    async def serve_stored(self, body: bytes) -> None:
        """Send a stored answer, as JSON or re-streamed."""
        ...

    async def fail(self, exc: GatewayError) -> None:
        """Send ``exc`` as the answer."""
        ...


class _Flight:
    """One (tenant, key) in progress: its body's fingerprint and its outcome."""

    __slots__ = ("fingerprint", "outcome")

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        self.outcome: asyncio.Future[IdempotencyRecord | None] = (
            asyncio.get_running_loop().create_future()
        )


def _disk_key(slot: Slot) -> str:
    return "i:" + digest(list(slot))


def _conflict() -> IdempotencyConflictError:
    return IdempotencyConflictError(
        "this Idempotency-Key was already used with a different request body"
    )


class Idempotency:
    """Runs requests that carry an ``Idempotency-Key`` at most once per tenant."""

    def __init__(self, disk: ByteStore, clock: Clock) -> None:
        """Keep records on ``disk``; flights live in this process."""
        self._disk = disk
        self._clock = clock
        self._flights: dict[Slot, _Flight] = {}

    async def serve(self, tenant: str, exchange: Replayable) -> None:
        """Serve ``exchange``; with an ``Idempotency-Key``, once per (tenant, key).

        Without the header (or off ``ENDPOINTS``) this is ``exchange.serve()``.
        """
        key = exchange.ctx.headers.get("idempotency-key")
        endpoint = exchange.ctx.endpoint
        if key is None or endpoint not in ENDPOINTS:
            await exchange.serve()
            return
        if not 0 < len(key) <= MAX_KEY_CHARS:
            await exchange.fail(
                InvalidRequestError(
                    f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} characters"
                )
            )
            return
        slot: Slot = (tenant, key) if endpoint == "chat" else (tenant, key, endpoint)
        fingerprint = digest(exchange.payload)
        try:
            await self._serve(slot, fingerprint, exchange)
        except (DeadlineExceededError, IdempotencyConflictError) as exc:
            await exchange.fail(exc)

    async def _serve(self, slot: Slot, fingerprint: str, exchange: Replayable) -> None:
        while True:
            flight = self._flights.get(slot)
            if flight is None:
                await self._lead(slot, fingerprint, exchange)
                return
            if flight.fingerprint != fingerprint:
                raise _conflict()
            record = await _wait(flight, exchange.deadline)
            if record is not None:
                await _replay(record, fingerprint, exchange)
                return
            # The first request kept nothing: run this one (or follow a new first).

    async def _lead(self, slot: Slot, fingerprint: str, exchange: Replayable) -> None:
        flight = _Flight(fingerprint)
        self._flights[slot] = flight
        record: IdempotencyRecord | None = None
        kept = False
        try:
            record = await self._load(slot)
            if record is not None:
                flight.fingerprint = record.fingerprint
                await _replay(record, fingerprint, exchange)
                return
            exchange.keeps_answer = True
            await exchange.serve()
            record = self._record(fingerprint, exchange)
            kept = record is not None
        finally:
            self._land(slot, flight, record, keep=kept)

    def _land(
        self,
        slot: Slot,
        flight: _Flight,
        record: IdempotencyRecord | None,
        *,
        keep: bool,
    ) -> None:
        """Wake the waiters; free the slot once the record is on disk (or not kept)."""
        if not flight.outcome.done():
            flight.outcome.set_result(record)
        write = None
        if keep and record is not None:
            write = self._disk.set_later(_disk_key(slot), _encode(record), TTL_S)
        if write is None:
            self._flights.pop(slot, None)
        else:
            write.add_done_callback(lambda _: self._flights.pop(slot, None))

    def _record(
        self, fingerprint: str, exchange: Replayable
    ) -> IdempotencyRecord | None:
        if exchange.answer is None:
            return None
        return IdempotencyRecord(
            fingerprint=fingerprint,
            body=exchange.answer,
            created_wall=self._clock.wall(),
            served_by=exchange.ctx.served_by or "",
        )

    async def _load(self, slot: Slot) -> IdempotencyRecord | None:
        raw = await self._disk.get(_disk_key(slot))
        if raw is None:
            return None
        try:
            record = _decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._disk.failed("decode", exc)
            return None
        if self._clock.wall() - record.created_wall >= TTL_S:
            return None
        return record


async def _wait(flight: _Flight, deadline: Deadline) -> IdempotencyRecord | None:
    """Wait for the first request's outcome, no longer than this request's deadline."""
    try:
        async with asyncio.timeout(deadline.left()):
            return await asyncio.shield(flight.outcome)
    except TimeoutError:
        raise DeadlineExceededError(
            "the deadline ran out while the first request with this "
            "Idempotency-Key was still running"
        ) from None


async def _replay(
    record: IdempotencyRecord, fingerprint: str, exchange: Replayable
) -> None:
    if record.fingerprint != fingerprint:
        raise _conflict()
    exchange.ctx.served_by = record.served_by or None
    exchange.ctx.idempotent_replay = True
    await exchange.serve_stored(record.body)
