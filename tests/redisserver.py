"""Redis for the scale-out tests: the shared server on 6379, or a test's own.

The shared server (127.0.0.1:6379) is what CI runs (``.ci/run`` starts it);
a test run that finds it down starts it the same way, and fails loudly if it
cannot, so the Redis tests are never skipped. Tests that stop Redis mid-run
start their own ``redis-server`` on a free port and stop it by PID.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import uuid
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from collections.abc import Callable

SHARED_URL = "redis://127.0.0.1:6379/0"


def _ping(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def wait_until(
    condition: Callable[[], bool], timeout_s: float = 3.0, what: str = "condition"
) -> None:
    """Poll ``condition`` every 10 ms; fail after ``timeout_s``."""
    ticker = threading.Event()
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        ticker.wait(0.01)
    if not condition():
        raise AssertionError(f"{what} did not happen within {timeout_s:g}s")


def ensure_shared_redis() -> str:
    """Return the shared Redis URL, starting the server if it is not running."""
    if _ping(SHARED_URL):
        return SHARED_URL
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError(
            "Redis is not running on 127.0.0.1:6379 and redis-server is not on PATH"
        )
    subprocess.run(
        [
            server,
            "--daemonize",
            "yes",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
        timeout=10,
    )
    wait_until(lambda: _ping(SHARED_URL), 5.0, "the shared Redis starting")
    return SHARED_URL


def unique_prefix() -> str:
    """Return a key prefix no other test uses."""
    return f"fusebox-test:{uuid.uuid4().hex[:12]}:"


def drop_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (best effort)."""
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=500))
        if keys:
            client.delete(*keys)
    except redis.RedisError:
        pass
    finally:
        client.close()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis:
    """A ``redis-server`` of the test's own on a free port, stopped by PID."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OwnRedis:
        """Start the server (on the same port each time) and wait until it answers."""
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not on PATH")
        self._proc = subprocess.Popen(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(
            lambda: _ping(self.url), 5.0, f"redis-server on port {self.port} starting"
        )
        return self

    def freeze(self) -> None:
        """Stop the server's process (SIGSTOP): connections hang, nothing answers."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen server run again (SIGCONT)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server by its PID and wait for it to exit."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
