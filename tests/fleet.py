"""Helpers for the scale-out tests: a fleet of in-thread gateways on one Redis."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import TYPE_CHECKING

import httpx

from tests.harness import DEMO_KEY, GatewayThread, config_text, running_gateway
from tests.redisserver import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

    from gateway.fakeupstream import FakeUpstream
    from policies.breaker import Breaker

BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
ENV = {"FAKE_KEY": "k"}
# A generous store timeout: on a loaded machine the in-process gateways' loops
# can stall longer than the 200 ms default, which would read as Redis trouble.
STORE = """
[store]
kind = "redis"
url = "{url}"
prefix = "{prefix}"
timeout_s = {timeout_s}
"""


def fleet_config(
    upstream: FakeUpstream,
    url: str,
    prefix: str,
    body: str,
    *,
    globex: str = "",
    timeout_s: float = 1.0,
) -> str:
    """Return a gateway config whose store is the Redis at ``url`` under ``prefix``."""
    store = STORE.format(url=url, prefix=prefix, timeout_s=timeout_s)
    return config_text(upstream.url, store + body, globex=globex)


def post(gw: GatewayThread, key: str = DEMO_KEY, **extra: object) -> httpx.Response:
    """POST one chat completion to ``gw`` and return the response."""
    headers = {"Authorization": f"Bearer {key}"}
    idem = extra.pop("idempotency_key", None)
    if isinstance(idem, str):
        headers["Idempotency-Key"] = idem
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json={**BODY, **extra},
        headers=headers,
        timeout=10,
    )


async def burst(
    gateways: list[GatewayThread], n: int, key: str = DEMO_KEY
) -> list[httpx.Response]:
    """Send ``n`` concurrent requests to each gateway; return every response."""
    async with httpx.AsyncClient(timeout=10) as client:
        return list(
            await asyncio.gather(
                *(
                    client.post(
                        gw.url + "/v1/chat/completions",
                        json=BODY,
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    for gw in gateways
                    for _ in range(n)
                )
            )
        )


def breaker(gw: GatewayThread, deployment: str = "fake/gpt-a") -> Breaker:
    """Return ``deployment``'s breaker in ``gw``."""
    found: Breaker = gw.runtime.deployments[deployment].breaker
    return found


def is_synced(gw: GatewayThread) -> bool:
    """Tell whether ``gw`` reaches Redis and hears the fleet's events."""
    healthy: bool = gw.runtime.store.healthy
    return healthy


@contextlib.contextmanager
def replicas(
    text: str, n: int, environ: dict[str, str] | None = None
) -> Iterator[list[GatewayThread]]:
    """Serve ``n`` gateways on ``text``; yield them once each hears the fleet."""
    with contextlib.ExitStack() as stack:
        gateways = [
            stack.enter_context(running_gateway(text, environ or ENV)) for _ in range(n)
        ]
        for gw in gateways:
            wait_until(functools.partial(is_synced, gw), 3.0, "the store syncing")
        yield gateways
