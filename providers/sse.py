r"""An incremental Server-Sent Events parser, shared by the provider adapters.

Bytes may arrive split anywhere (inside a line, inside a UTF-8 sequence, between
CR and LF); comment lines are skipped; ``data:`` lines join with ``\\n``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import msgspec

from providers.errors import UpstreamError


class SSEEvent(msgspec.Struct, frozen=True):
    """One dispatched event: its name ("message" when unnamed) and its data."""

    event: str
    data: str


class SSEParser:
    """Feed bytes, get complete events back (WHATWG event-stream rules)."""

    __slots__ = ("_buf", "_data", "_event", "_pending_cr")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []
        self._event = ""
        self._pending_cr = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume ``chunk`` and return the events it completed."""
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._pending_cr = chunk.endswith(b"\r")
        buf = self._buf + chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, self._buf = buf.split(b"\n")
        events: list[SSEEvent] = []
        for raw in lines:
            self._line(raw.decode("utf-8", "replace"), events)
        return events

    def _line(self, line: str, events: list[SSEEvent]) -> None:
        if not line:
            if self._data or self._event:
                events.append(SSEEvent(self._event or "message", "\n".join(self._data)))
            self._data = []
            self._event = ""
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value

    def close(self) -> list[SSEEvent]:
        """Flush a final event that ended without a blank line."""
        return self.feed(b"\n\n") if self._buf or self._data else []


class EventReader:
    """Pull SSE events one at a time from an upstream body's byte chunks."""

    __slots__ = ("_chunks", "_next", "_parser", "_pending", "eof")

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._parser = SSEParser()
        self._pending: list[SSEEvent] = []
        self._next = 0
        #: The body has ended (every event read or about to be).
        self.eof = False

    async def next(self) -> SSEEvent | None:
        """Return the next event, or None at the end of the body."""
        while self._next >= len(self._pending):
            if self.eof:
                return None
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self.eof = True
                self._pending = self._parser.close()
            else:
                self._pending = self._parser.feed(chunk)
            self._next = 0
        event = self._pending[self._next]
        self._next += 1
        return event

    async def drain(self) -> None:
        """Read to the end of the body, so the connection can go back to the pool."""
        try:
            while not self.eof:
                await self.next()
        except UpstreamError:
            return  # the answer is whole; the connection is just not reusable

    async def aclose(self) -> None:
        """Stop the underlying chunk generator (if it is not running elsewhere)."""
        if isinstance(self._chunks, AsyncGenerator):
            with contextlib.suppress(RuntimeError):  # still running in another task
                await self._chunks.aclose()
