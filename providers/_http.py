"""The one transport module: an aiohttp session and connector per provider.

Innermost layer of the onion. Every foreign exception from aiohttp or the socket
is translated here, once, by ``map_transport_errors`` into ``providers.errors``.
The connector's pool is sized at or above the provider's bulkhead, so the pool is
never a hidden second queue.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

import aiohttp

from providers.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeoutError,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping

    from providers.types import AttemptLimits

_SECRETISH: Final = re.compile(
    r"\b(sk|key|api|token)[-_][A-Za-z0-9_\-\*\.]{6,}", re.IGNORECASE
)
READ_CHUNK: Final = 65536
#: Distinct connect timeouts kept built (the configured one, plus a few capped ones).
_TIMEOUT_CACHE: Final = 16


def redact(text: str, secret: str | None) -> str:
    """Remove the provider key (and anything shaped like a key) from ``text``."""
    if secret:
        text = text.replace(secret, "[redacted]")
    return _SECRETISH.sub("[redacted]", text)


@contextmanager
def map_transport_errors(deployment: str, *, started: bool = False) -> Iterator[None]:
    """Translate aiohttp and socket errors into the taxonomy.

    ``started`` tells whether response headers were already received: a reset
    before headers is a connect-class failure, a reset after them is a protocol
    failure of the body.
    """
    try:
        yield
    except UpstreamError:
        raise
    except aiohttp.ConnectionTimeoutError as exc:
        # A connect timeout is a connect failure (retried), not a silent upstream.
        raise UpstreamConnectError(
            f"upstream {deployment} did not accept a connection in time",
            deployment=deployment,
        ) from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        what = "read" if started else "connect or response"
        raise UpstreamTimeoutError(
            f"upstream {deployment} timed out ({what})", deployment=deployment
        ) from exc
    except aiohttp.ClientPayloadError as exc:
        raise UpstreamConnectError(
            f"upstream {deployment} broke off its response", deployment=deployment
        ) from exc
    except (aiohttp.ClientError, OSError) as exc:
        kind = type(exc).__name__
        raise UpstreamConnectError(
            f"upstream {deployment} connection failed ({kind})", deployment=deployment
        ) from exc


class UpstreamResponse:
    """An upstream answer whose headers have arrived; the body is read on demand."""

    __slots__ = ("_deployment", "_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse, deployment: str) -> None:
        self._resp = resp
        self._deployment = deployment
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        """Return the whole body."""
        with map_transport_errors(self._deployment, started=True):
            return await self._resp.read()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield body bytes as they arrive (the caller bounds each wait)."""
        content = self._resp.content
        while True:
            with map_transport_errors(self._deployment, started=True):
                chunk = await content.readany()
            if not chunk:
                return
            yield chunk

    def close(self) -> None:
        """Drop the connection (used when a stream is abandoned midway)."""
        self._resp.close()

    def release(self) -> None:
        """Return a fully read connection to the pool."""
        self._resp.release()


class Transport:
    """HTTP to one provider: one session, one connector, keep-alive pooling."""

    def __init__(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str],
        pool_size: int,
        secret: str | None = None,
    ) -> None:
        """Prepare a transport; the session is created on first use, in the loop."""
        self._base_url = base_url.rstrip("/")
        self._headers = dict(headers)
        self._pool_size = pool_size
        self.secret = secret
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size,
                limit_per_host=0,
                ttl_dns_cache=300,
                keepalive_timeout=30,
            )
            # Lean per-request work: JSON content type set once, no cookie jar, no
            # compression (bytes are forwarded as they come), no User-Agent.
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={**self._headers, "Content-Type": "application/json"},
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
            )
        return self._session

    async def post(
        self, path: str, body: bytes, *, limits: AttemptLimits, deployment: str
    ) -> UpstreamResponse:
        """POST JSON ``body`` to ``path`` and return once the headers arrive."""
        # No socket read timeout here: the policy layer bounds the wait for the
        # first content (first_token_s), each gap between stream events (read_s)
        # and the whole request (the deadline). A socket-level read_s would also
        # cut a slow but healthy non-streamed answer.
        timeout = self._timeouts.get(limits.connect_s)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=limits.connect_s,
                sock_connect=limits.connect_s,
                sock_read=None,
            )
            if len(self._timeouts) < _TIMEOUT_CACHE:
                self._timeouts[limits.connect_s] = timeout
        session = self._get_session()
        with map_transport_errors(deployment):
            resp = await session.post(self._base_url + path, data=body, timeout=timeout)
        return UpstreamResponse(resp, deployment)

    async def aclose(self) -> None:
        """Close the session and its pooled connections."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        # Give aiohttp a tick to close its transports cleanly.
        await asyncio.sleep(0)
