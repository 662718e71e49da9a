"""The chaos demo's rig: its config, a gateway in a thread, a chat client.

Outside the onion, like the fake upstream: ``gateway.demo`` plays the tour on
top of these. Everything binds to 127.0.0.1 on free ports.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import socket
import threading
from typing import TYPE_CHECKING, Final, NamedTuple

import uvicorn

if TYPE_CHECKING:
    from gateway.app import Gateway
    from policies.breaker import Transition

DEMO_KEY: Final = "sk-fusebox-demo"
PRIMARY: Final = "fake/gpt-primary"
BACKUP: Final = "fake2/gpt-backup"
#: Longest wait for the gateway thread to start or stop.
_WAIT_S: Final = 10.0


class Pace(NamedTuple):
    """The tour's timings, in seconds."""

    interval_s: float
    healthy_s: float
    outage_s: float
    backup_down_at_s: float
    backup_down_s: float
    window_s: float
    open_s: float
    max_open_s: float
    tail_s: float


def demo_config(upstream_url: str, store: str, pace: Pace) -> str:
    """Return the demo's TOML: two fake providers, a small breaker, one tenant."""
    digest = hashlib.sha256(DEMO_KEY.encode()).hexdigest()
    return f"""
[store]
path = "{store}"

[defaults.retry]
attempts = 2
base_s = 0.02
max_s = 0.1

[defaults.breaker]
min_calls = 4
window_s = {pace.window_s}
open_s = {pace.open_s}
max_open_s = {pace.max_open_s}

[providers.fake]
kind = "openai"
base_url = "{upstream_url}/v1"

[providers.fake2]
kind = "openai"
base_url = "{upstream_url}/v1"

[models.chat]
chain = ["{PRIMARY}", "{BACKUP}", "@static"]
static = "Everyone is busy right now (this is the configured static answer)."

[tenants.demo]
key_sha256 = ["{digest}"]
"""


class GatewayThread:
    """The demo's gateway, served by uvicorn from a background thread."""

    def __init__(self, app: Gateway) -> None:
        """Bind a free loopback port now; serve once ``start`` is called."""
        self.app = app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(app, lifespan="on", log_level="error", loop="asyncio")
        self._server = uvicorn.Server(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="demo-gateway")

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            await self._server.serve(sockets=[self._sock])

        asyncio.run(main())

    def start(self) -> None:
        """Serve, and return once the gateway accepts connections."""
        self._thread.start()
        ready = threading.Event()
        for _ in range(int(_WAIT_S / 0.01)):
            if self._server.started:
                return
            ready.wait(0.01)
        raise RuntimeError("the demo gateway did not start")

    def stop(self) -> None:
        """Stop serving (the lifespan closes the upstream pools)."""
        self._server.should_exit = True
        self._thread.join(_WAIT_S)
        self._sock.close()

    def breakers(self) -> dict[str, tuple[str, list[Transition]]]:
        """Return each deployment's breaker state and history, read on the loop."""

        async def read() -> dict[str, tuple[str, list[Transition]]]:
            runtime = self.app.state.runtime
            return {
                name: (dep.breaker.state.value, list(dep.breaker.history))
                for name, dep in runtime.deployments.items()
            }

        assert self._loop is not None  # noqa: S101 - set before ``started``
        return asyncio.run_coroutine_threadsafe(read(), self._loop).result(_WAIT_S)


class Outcome(NamedTuple):
    """What one request got."""

    status: int
    served_by: str
    degraded: str
    attempts: str


class Client:
    """Sends the demo's chat requests over one keep-alive connection."""

    def __init__(self, port: int) -> None:
        """Connect lazily to the gateway on ``port``."""
        self._port = port
        self._conn: http.client.HTTPConnection | None = None
        self._body = json.dumps(
            {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}
        ).encode()

    def send(self) -> Outcome:
        """POST one chat completion and return its status and Fusebox headers."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=30)
        headers = {
            "authorization": f"Bearer {DEMO_KEY}",
            "content-type": "application/json",
        }
        try:
            self._conn.request("POST", "/v1/chat/completions", self._body, headers)
            resp = self._conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            return Outcome(0, "-", "", "(no answer)")
        return Outcome(
            resp.status,
            resp.getheader("x-fusebox-served-by", "-"),
            resp.getheader("x-fusebox-degraded", ""),
            resp.getheader("x-fusebox-attempts", ""),
        )

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
