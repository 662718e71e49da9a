"""Streaming time to first event, measured with a raw-socket HTTP/1.1 client.

wrk cannot see the first byte of a body, so this client sends one streamed chat
request at a time on a keep-alive connection and times, per stream, from the
send to the end of the first complete SSE event (a blank line), then reads the
rest of the chunked body and counts its events. Sequential, bounded in count
and in time.
"""

from __future__ import annotations

import json
import socket
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from benchmarks.loadgen import Target

_SOCKET_TIMEOUT_S = 10.0
_OK = 200


@dataclass
class Ttfe:
    """Per-stream times to the first event (ms) and what the streams held."""

    label: str
    samples_ms: list[float]
    events_per_stream: int
    errors: int

    def pct(self, q: float) -> float:
        """Return the ``q``-th percentile (0-100) of the samples, in ms."""
        ordered = sorted(self.samples_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]

    def as_json(self) -> dict[str, Any]:
        """Return the summary for ``latest.json``."""
        return {
            "label": self.label,
            "streams": len(self.samples_ms),
            "p50_ms": self.pct(50),
            "p99_ms": self.pct(99),
            "mean_ms": statistics.fmean(self.samples_ms) if self.samples_ms else None,
            "events_per_stream": self.events_per_stream,
            "errors": self.errors,
        }


class _Conn:
    """One keep-alive connection that reads chunked HTTP/1.1 responses."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=_SOCKET_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def head(self) -> tuple[int, dict[str, str]]:
        status = int(self.file.readline().split()[1])
        headers: dict[str, str] = {}
        while (line := self.file.readline()) not in {b"\r\n", b"\n", b""}:
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def chunks(self, headers: dict[str, str]) -> Iterator[bytes]:
        """Yield body pieces (chunked, or a Content-Length body in one piece)."""
        if "chunked" not in headers.get("transfer-encoding", ""):
            yield self.file.read(int(headers.get("content-length", "0")))
            return
        while True:
            size = int(self.file.readline().split(b";")[0], 16)
            if size == 0:
                self.file.readline()
                return
            data = self.file.read(size + 2)[:-2]
            yield data


def _request(target: Target, host: str, port: int, path: str) -> bytes:
    body = json.dumps(
        {
            "model": target.model,
            "messages": [{"role": "user", "content": target.prompt}],
            "stream": True,
        }
    ).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {target.key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _one(conn: _Conn, request: bytes) -> tuple[float | None, int]:
    """Send one streamed request; return (ms to first event or None, events)."""
    started = time.perf_counter()
    conn.sock.sendall(request)
    status, headers = conn.head()
    first: float | None = None
    buffer = b""
    for piece in conn.chunks(headers):
        buffer += piece
        if first is None and b"\n\n" in buffer:
            first = (time.perf_counter() - started) * 1000
    events = buffer.count(b"\n\n")
    if status != _OK or b'"error"' in buffer:
        return None, events
    return first, events


def measure(label: str, target: Target, *, streams: int, budget_s: float) -> Ttfe:
    """Time ``streams`` sequential streams (stopping early after ``budget_s``)."""
    hostport = target.url.removeprefix("http://").split("/")[0]
    host, _, port = hostport.partition(":")
    request = _request(target, host, int(port), "/v1/chat/completions")
    samples: list[float] = []
    events, errors = 0, 0
    conn = _Conn(host, int(port))
    stop_at = time.monotonic() + budget_s
    try:
        for _ in range(streams):
            if time.monotonic() > stop_at:
                break
            first, events = _one(conn, request)
            if first is None:
                errors += 1
            else:
                samples.append(first)
    finally:
        conn.close()
    return Ttfe(label, samples, events, errors)
