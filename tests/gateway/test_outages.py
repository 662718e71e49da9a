"""Outage scenarios through real sockets: breakers, bulkheads, cascades, restarts, storms."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import TYPE_CHECKING

import httpx
import pytest

from gateway.fakeupstream import FakeUpstream
from tests.fakes.clock import FakeClock
from tests.harness import (
    DEMO_KEY,
    OTHER_KEY,
    GatewayThread,
    config_text,
    running_gateway,
    wait_for_requests,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

FAST = """
[defaults.timeouts]
connect_s = 1
first_token_s = 0.3
read_s = 0.3
attempt_s = 5
"""
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


def post(
    gw: GatewayThread, model: str = "chat", key: str = DEMO_KEY, **extra: object
) -> httpx.Response:
    """POST one chat completion and return the response."""
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json={**BODY, "model": model, **extra},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


@pytest.fixture
def clock() -> FakeClock:
    """Give the gateway a clock that only moves when the test says so."""
    return FakeClock()


FLAPPING = """
[providers.fake.retry]
attempts = 1

[providers.fake.breaker]
min_calls = 4
failure_rate = 0.5
open_s = 10
max_open_s = 40
half_open_probes = 1

[models.chat]
chain = ["fake/gpt-a", "fake2/gpt-b"]
"""


@pytest.fixture
def flapping(upstream: FakeUpstream, clock: FakeClock) -> Iterator[GatewayThread]:
    """Serve a gateway whose primary has a small breaker and no retries."""
    text = config_text(upstream.url, FLAPPING, defaults=FAST)
    with running_gateway(text, {"FAKE_KEY": "k"}, clock) as gw:
        yield gw


async def _burst(
    gw: GatewayThread, n: int, model: str = "chat"
) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=10) as client:
        return await asyncio.gather(
            *(
                client.post(
                    gw.url + "/v1/chat/completions",
                    json={**BODY, "model": model},
                    headers={"Authorization": f"Bearer {DEMO_KEY}"},
                )
                for _ in range(n)
            )
        )


def test_flapping_primary_opens_the_breaker_probes_once_and_recovers(
    flapping: GatewayThread,
    upstream: FakeUpstream,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Failures open the breaker, the fallback serves, one probe per open period, then recovery."""
    caplog.set_level(logging.INFO, logger="fusebox")
    upstream.set_mode("gpt-a", "503")
    for _ in range(4):
        assert post(flapping).status_code == 200
    assert upstream.count("gpt-a") == 4
    resp = post(flapping)
    assert resp.headers["x-fusebox-attempts"] == "fake/gpt-a=open; fake2/gpt-b=200"
    assert upstream.count("gpt-a") == 4

    clock.advance(10)
    answers = asyncio.run(_burst(flapping, 8))
    assert all(r.status_code == 200 for r in answers)
    assert upstream.count("gpt-a") == 5  # exactly one probe, which failed: re-open

    clock.advance(10)  # the re-open doubled the period: still open
    post(flapping)
    assert upstream.count("gpt-a") == 5

    upstream.set_mode("gpt-a", None)
    clock.advance(10)
    probe = post(flapping)
    assert probe.headers["x-fusebox-served-by"] == "fake/gpt-a"
    after = post(flapping)
    assert after.headers["x-fusebox-attempts"] == "fake/gpt-a=200"
    transitions = [
        r.getMessage() for r in caplog.records if "fake/gpt-a" in r.getMessage()
    ]
    assert any(
        "failure rate" in t for t in transitions
    )  # every transition has its reason
    assert len(transitions) >= 5  # open, half-open, re-open, half-open, closed


CASCADE = """
[providers.slow]
kind = "openai"
base_url = "{url}/v1"
api_key_env = "FAKE_KEY"

[providers.slow.retry]
attempts = 1

[providers.slow.timeouts]
first_token_s = 8

[providers.slow.bulkhead]
max_concurrent = 40
max_waiting = 10
wait_s = 0.05

[providers.slow.breaker]
min_calls = 10
failure_rate = 0.5
slow_s = 0.2
open_s = 60

[providers.fake2.timeouts]
first_token_s = 20

[models.chat]
chain = ["slow/gpt-hang", "fake2/gpt-b"]

[models.other]
chain = ["fake2/gpt-c"]
"""


def test_one_hanging_provider_does_not_take_down_the_rest(
    upstream: FakeUpstream,
) -> None:
    """With 200 requests stuck on a hanging provider, health and other chains answer at once."""
    text = config_text(upstream.url, CASCADE.format(url=upstream.url), defaults=FAST)
    upstream.set_mode("gpt-hang", "hang")
    with running_gateway(text, {"FAKE_KEY": "k"}) as gw:

        async def scenario() -> tuple[list[httpx.Response], list[httpx.Response]]:
            limits = httpx.Limits(max_connections=400)
            async with httpx.AsyncClient(timeout=15, limits=limits) as client:
                hanging = [
                    asyncio.ensure_future(
                        client.post(
                            gw.url + "/v1/chat/completions",
                            json=BODY,
                            headers={"Authorization": f"Bearer {DEMO_KEY}"},
                        )
                    )
                    for _ in range(200)
                ]
                await asyncio.sleep(0.05)
                probes = []
                for _ in range(5):
                    # Answered while 40 calls still hang on the slow provider (8 s);
                    # the bound is loose because client, gateway and fake upstream
                    # share one process (and its GIL) here, under coverage in CI.
                    probes.append(await client.get(gw.url + "/healthz", timeout=6))
                    probes.append(
                        await client.post(
                            gw.url + "/v1/chat/completions",
                            json={**BODY, "model": "other"},
                            headers={"Authorization": f"Bearer {OTHER_KEY}"},
                            timeout=6,
                        )
                    )
                return list(await asyncio.gather(*hanging)), probes

        answers, probes = asyncio.run(scenario())
    assert [p.status_code for p in probes] == [200] * len(probes)
    failed = [(a.status_code, a.headers.get("x-fusebox-attempts")) for a in answers]
    bad = [f for f in failed if f[0] != 200]
    assert not bad, bad[:3]
    assert {a.headers["x-fusebox-served-by"] for a in answers} == {"fake2/gpt-b"}
    assert (
        upstream.count("gpt-hang") < 200
    )  # the breaker and bulkhead spared it the rest


RESTART = """
[providers.flaky]
kind = "openai"
base_url = "{url}/v1"
api_key_env = "FAKE_KEY"

[providers.flaky.breaker]
min_calls = 100

[models.chat]
chain = ["flaky/gpt-a", "fake2/gpt-b"]
"""


def test_upstream_restart_never_surfaces_a_stale_connection(
    upstream: FakeUpstream,
) -> None:
    """An upstream killed mid-request and restarted: in-flight requests fail over, later ones are clean."""
    flaky = FakeUpstream()
    flaky.start()
    try:
        text = config_text(upstream.url, RESTART.format(url=flaky.url), defaults=FAST)
        with running_gateway(text, {"FAKE_KEY": "k"}) as gw:
            for _ in range(5):  # fill the connection pool with keep-alive connections
                assert post(gw).headers["x-fusebox-served-by"] == "flaky/gpt-a"
            flaky.set_mode("gpt-a", "slowfirst200")
            results: list[httpx.Response] = []
            inflight = [
                threading.Thread(target=lambda: results.append(post(gw)))
                for _ in range(4)
            ]
            for t in inflight:
                t.start()
            wait_for_requests(flaky, "gpt-a", 9, timeout_s=2)
            flaky.restart()
            for t in inflight:
                t.join(10)
            assert [r.status_code for r in results] == [200] * 4
            later = [post(gw) for _ in range(10)]
    finally:
        flaky.stop()
    assert all(r.status_code == 200 for r in later)
    assert {r.headers["x-fusebox-served-by"] for r in later} == {"flaky/gpt-a"}


STORM = """
[defaults.retry]
attempts = 3
budget_ratio = 0.2
budget_min_per_s = 1

[models.chat]
chain = ["fake/gpt-storm"]
"""


def test_429_storm_is_never_amplified(upstream: FakeUpstream) -> None:
    """Under a persistent 429 storm the upstream sees at most N × (1 + ratio) + floor × seconds."""
    text = config_text(upstream.url, STORM).replace(
        "[defaults.retry]\nbase_s = 0.01\nmax_s = 0.05\n", ""
    )
    upstream.set_mode("gpt-storm", "429")
    n = 60
    with running_gateway(text, {"FAKE_KEY": "k"}) as gw:
        started = asyncio.run(_timed_burst(gw, n))
    statuses, seconds = started
    assert set(statuses) <= {429, 503}  # refused or rate limited, never a hang
    assert upstream.count("gpt-storm") <= n * 1.2 + 1 * (seconds + 10) + 1


async def _timed_burst(gw: GatewayThread, n: int) -> tuple[list[int], float]:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    answers = await _burst(gw, n)
    return [a.status_code for a in answers], loop.time() - t0


BULKHEADS = """
[providers.fake.bulkhead]
max_concurrent = 1
max_waiting = 0
wait_s = 0

[providers.fake.retry]
attempts = 1

[providers.fake.timeouts]
read_s = 30  # a stalled stream holds its slot until the client hangs up

[providers.fake.breaker]
min_calls = 100

[models.chat]
chain = ["fake/gpt-slow", "fake2/gpt-b"]

[models.solo]
chain = ["fake2/gpt-hang"]
"""


@pytest.fixture
def bulkheads(upstream: FakeUpstream) -> Iterator[GatewayThread]:
    """Serve a gateway whose primary provider has one slot and no queue."""
    text = config_text(upstream.url, BULKHEADS, defaults=FAST).replace(
        "[tenants.globex]", "[tenants.globex]\nmax_concurrent = 2"
    )
    with running_gateway(text, {"FAKE_KEY": "k"}) as gw:
        yield gw


def test_full_provider_bulkhead_sends_the_next_request_to_the_next_rung(
    bulkheads: GatewayThread, upstream: FakeUpstream
) -> None:
    """While the provider's only slot is busy, a request skips it at once (``full``)."""
    upstream.set_mode("gpt-slow", "delay250")
    holder = threading.Thread(target=post, args=(bulkheads,))
    holder.start()
    wait_for_requests(upstream, "gpt-slow", 1)
    resp = post(bulkheads)
    holder.join(5)
    assert resp.headers["x-fusebox-attempts"] == "fake/gpt-slow=full; fake2/gpt-b=200"


def test_tenant_over_its_concurrency_gets_429_with_retry_after(
    bulkheads: GatewayThread, upstream: FakeUpstream
) -> None:
    """A tenant at ``max_concurrent`` gets 429 with ``Retry-After: 1`` at once."""
    upstream.set_mode("gpt-hang", "delay400")
    holders = [
        threading.Thread(target=post, args=(bulkheads, "solo", OTHER_KEY))
        for _ in range(2)
    ]
    for h in holders:
        h.start()
    wait_for_requests(upstream, "gpt-hang", 2)
    resp = post(bulkheads, "solo", key=OTHER_KEY)
    for h in holders:
        h.join(5)
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "1"
    assert resp.json()["error"]["type"] == "rate_limit_error"
    assert post(bulkheads, key=DEMO_KEY).status_code == 200


def test_client_hang_up_cancels_the_upstream_call_and_frees_the_slot(
    bulkheads: GatewayThread, upstream: FakeUpstream
) -> None:
    """A client that disconnects mid-stream frees the provider slot at once."""
    upstream.set_mode("gpt-slow", "stall2")
    raw = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {DEMO_KEY}\r\nContent-Type: application/json\r\n"
    )
    body = b'{"model": "chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    with socket.create_connection(("127.0.0.1", bulkheads.port), timeout=5) as sock:
        sock.sendall(
            raw.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        seen = b""
        while b"data:" not in seen:
            chunk = sock.recv(65536)
            assert chunk, "the gateway closed the stream before any content"
            seen += chunk
    upstream.set_mode("gpt-slow", None)
    deadline = asyncio.run(_first_served_by_primary(bulkheads))
    assert deadline


async def _first_served_by_primary(gw: GatewayThread) -> bool:
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(50):
            resp = await client.post(
                gw.url + "/v1/chat/completions",
                json=BODY,
                headers={"Authorization": f"Bearer {DEMO_KEY}"},
            )
            if resp.headers["x-fusebox-served-by"] == "fake/gpt-slow":
                return True
            await asyncio.sleep(0.02)
    return False
