"""Reference ASGI apps that bound what one worker can do: the "floors".

``python -m benchmarks.run --floors`` serves each with uvicorn (uvloop,
httptools), pinned like the gateway, and loads them beside Fusebox:

* ``canned``: reads the request, answers a fixed body (the server's own cost);
* ``aiohttp_proxy``: forwards the body to the fake upstream with one shared
  ``aiohttp.ClientSession`` (the cost of the transport Fusebox uses today);
* ``lean_proxy``: the same hop over a keep-alive pool of ``asyncio.Protocol``
  connections parsed by ``httptools`` (what a leaner upstream client costs).

Not the gateway: no auth, no policies, no streaming, no error handling. The
upstream's address comes from ``$FLOOR_UPSTREAM`` (``host:port``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httptools

_UPSTREAM = os.environ.get("FLOOR_UPSTREAM", "127.0.0.1:9100")
_HOST, _, _PORT = _UPSTREAM.partition(":")
_PATH = "/v1/chat/completions"
_CANNED = (
    b'{"id":"x","object":"chat.completion","choices":[{"index":0,"message":'
    b'{"role":"assistant","content":"Echo: hello lorem ipsum dolor sit amet"},'
    b'"finish_reason":"stop"}]}'
)
_REQUEST_HEAD = (
    f"POST {_PATH} HTTP/1.1\r\nHost: {_UPSTREAM}\r\n"
    "Content-Type: application/json\r\nAuthorization: Bearer x\r\n"
).encode()

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _read(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def canned(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer every request with a fixed chat completion."""
    if scope["type"] == "http":
        await _read(receive)
        await _answer(send, 200, _CANNED)


class _Session:
    """One lazily made ``aiohttp.ClientSession`` (made inside the running loop)."""

    session: aiohttp.ClientSession | None = None

    @classmethod
    def get(cls) -> aiohttp.ClientSession:
        if cls.session is None:
            cls.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1100)
            )
        return cls.session


async def aiohttp_proxy(scope: Scope, receive: Receive, send: Send) -> None:
    """Forward the body to the upstream with aiohttp; relay the answer."""
    if scope["type"] != "http":
        return
    body = await _read(receive)
    url = f"http://{_UPSTREAM}{_PATH}"
    headers = {"Content-Type": "application/json"}
    async with _Session.get().post(url, data=body, headers=headers) as resp:
        data = await resp.read()
        await _answer(send, resp.status, data)


class _Upstream(asyncio.Protocol):
    """One keep-alive connection; one request at a time; httptools parses."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), b"".join(self.body)))
        self.body = []

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("upstream closed"))


_POOL: list[_Upstream] = []


async def _lean_call(body: bytes) -> tuple[int, bytes]:
    loop = asyncio.get_running_loop()
    conn = _POOL.pop() if _POOL else None
    if conn is None or conn.transport is None or conn.transport.is_closing():
        _, conn = await loop.create_connection(_Upstream, _HOST, int(_PORT))
    conn.waiter = loop.create_future()
    length = b"Content-Length: %d\r\n\r\n" % len(body)
    assert conn.transport is not None  # noqa: S101 - set by connection_made
    conn.transport.write(b"".join((_REQUEST_HEAD, length, body)))
    answer = await conn.waiter
    _POOL.append(conn)
    return answer


async def lean_proxy(scope: Scope, receive: Receive, send: Send) -> None:
    """Forward the body over a pooled httptools connection; relay the answer."""
    if scope["type"] == "http":
        status, data = await _lean_call(await _read(receive))
        await _answer(send, status, data)
