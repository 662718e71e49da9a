"""Run a real gateway on a real socket (127.0.0.1, ephemeral port) in a thread.

Tests talk to it with the real openai / anthropic SDKs and raw HTTP, exactly as
users do; the upstreams are ``FakeUpstream`` servers on their own sockets.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING

import uvicorn

from gateway.app import create_app
from gateway.config import GatewayConfig, parse_config

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from opentelemetry.trace import TracerProvider

    from policies.clock import Clock

DEMO_KEY = "sk-test-acme"
OTHER_KEY = "sk-test-globex"


class GatewayThread:
    """A gateway served by uvicorn in a background thread."""

    def __init__(
        self,
        config: GatewayConfig,
        environ: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        tracer_provider: TracerProvider | None = None,
    ):
        self.config = config
        self.app = create_app(
            config,
            environ=environ or {},
            clock=clock,
            tracer_provider=tracer_provider,
        )
        self.runtime = self.app.state.runtime
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, lifespan="on", log_level="warning", loop="asyncio")
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            await self._server.serve(sockets=[self._sock])

        asyncio.run(main())

    def start(self) -> GatewayThread:
        self._thread.start()
        for _ in range(500):
            if self._server.started:
                return self
            self._thread.join(0.01)
        raise RuntimeError("the gateway did not start within 5 s")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@contextmanager
def running_gateway(
    config: GatewayConfig | str,
    environ: Mapping[str, str] | None = None,
    clock: Clock | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Iterator[GatewayThread]:
    """Serve ``config`` (a struct or TOML text) for the duration of the block."""
    if isinstance(config, str):
        config = parse_config(config)
    gw = GatewayThread(config, environ, clock, tracer_provider).start()
    try:
        yield gw
    finally:
        gw.stop()


def config_text(
    upstream_url: str, body: str = "", *, defaults: str = "", globex: str = ""
) -> str:
    """Return a test config: a fake OpenAI and Anthropic provider plus ``body``.

    Tenant ``acme`` has key ``sk-test-acme``; ``globex`` has ``sk-test-globex``.
    """
    import hashlib  # noqa: PLC0415

    acme = hashlib.sha256(DEMO_KEY.encode()).hexdigest()
    globex_hash = hashlib.sha256(OTHER_KEY.encode()).hexdigest()
    return f"""
[defaults.retry]
base_s = 0.01
max_s = 0.05
{defaults}

[providers.fake]
kind = "openai"
base_url = "{upstream_url}/v1"
api_key_env = "FAKE_KEY"

[providers.fake2]
kind = "openai"
base_url = "{upstream_url}/v1"
api_key_env = "FAKE_KEY"

[providers.claude]
kind = "anthropic"
base_url = "{upstream_url}"
api_key_env = "FAKE_KEY"
prefill = true

{body}

[tenants.acme]
key_sha256 = ["{acme}"]

[tenants.globex]
key_sha256 = ["{globex_hash}"]
{globex}
"""


def wait_for_requests(
    upstream: object, model: str, n: int, timeout_s: float = 2.0
) -> None:
    """Block until the fake upstream has seen ``n`` requests for ``model``."""
    ticker = threading.Event()
    for _ in range(int(timeout_s / 0.005)):
        if upstream.count(model) >= n:  # type: ignore[attr-defined]
            return
        ticker.wait(0.005)
    raise AssertionError(f"the upstream saw fewer than {n} requests for {model}")
