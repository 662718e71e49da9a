"""``/fusebox/status`` fields, admin auth on ``/fusebox/*``, and ``/readyz``."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.config import parse_config
from gateway.readiness import not_ready_reason
from tests.fakes.clock import WALL_OFFSET, FakeClock
from tests.harness import DEMO_KEY, GatewayThread, config_text, running_gateway

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from gateway.fakeupstream import FakeUpstream

ADMIN_KEY = "fbx-admin-secret-123"
CHAIN = """
[providers.fake.retry]
attempts = 1

[providers.fake.breaker]
min_calls = 3
failure_rate = 0.5
open_s = 10

[providers.fake2.bulkhead]
max_concurrent = 7
max_waiting = 3

[models.chat]
chain = ["fake/gpt-a", "fake2/gpt-b"]
"""


def chat(gw: GatewayThread) -> httpx.Response:
    """POST one chat completion as tenant acme."""
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {DEMO_KEY}"},
        timeout=10,
    )


def status(gw: GatewayThread, key: str | None = None) -> httpx.Response:
    """GET /fusebox/status, with the admin key if given."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(gw.url + "/fusebox/status", headers=headers, timeout=5)


@pytest.fixture
def clock() -> FakeClock:
    """Give the gateway a clock that only moves when the test says so."""
    return FakeClock()


@pytest.fixture
def gateway(
    upstream: FakeUpstream, clock: FakeClock, tmp_path: Path
) -> Iterator[GatewayThread]:
    """Serve the two-rung chain on a fake clock, with no admin key (loopback only)."""
    body = CHAIN + f'\n[store]\npath = "{tmp_path / "store"}"\n'
    with running_gateway(
        config_text(upstream.url, body), {"FAKE_KEY": "k"}, clock
    ) as gw:
        yield gw


def test_an_open_breaker_shows_its_state_reason_and_next_probe(
    gateway: GatewayThread, upstream: FakeUpstream, clock: FakeClock
) -> None:
    """After a 503 storm the status names the open state, why, since when and when it will probe."""
    upstream.set_mode("gpt-a", "503")
    for _ in range(4):
        chat(gateway)
    doc = status(gateway).json()
    now = clock.wall()
    assert doc["time"] == now
    breaker = doc["deployments"]["fake/gpt-a"]["breaker"]
    assert breaker["state"] == "open"
    assert "failure rate 100%" in breaker["reason"]
    assert breaker["since"] == now
    assert breaker["retry_at"] == now + 10
    assert breaker["calls"] == 3
    assert breaker["failure_rate"] == 1.0
    assert breaker["slow_rate"] == 0.0
    assert breaker["open_s_current"] == 10
    [opened] = breaker["history"]
    assert (opened["from"], opened["to"], opened["at"]) == ("closed", "open", now)
    other = doc["deployments"]["fake2/gpt-b"]
    assert other["breaker"]["state"] == "closed"
    assert other["breaker"]["retry_at"] is None
    assert other["paused_until"] is None


def test_a_429_with_retry_after_shows_when_the_pause_ends(
    gateway: GatewayThread, upstream: FakeUpstream, clock: FakeClock
) -> None:
    """A 429 with Retry-After 30 pauses the deployment until now + 30 s, with a reason."""
    upstream.script("gpt-a", "429ra30")
    assert chat(gateway).headers["x-fusebox-served-by"] == "fake2/gpt-b"
    dep = status(gateway).json()["deployments"]["fake/gpt-a"]
    assert dep["paused_until"] == pytest.approx(clock.wall() + 30)
    assert "429" in dep["pause_reason"]
    assert dep["breaker"]["state"] == "closed"
    clock.advance(31)
    assert status(gateway).json()["deployments"]["fake/gpt-a"]["paused_until"] is None


def test_providers_store_and_readiness_are_described(gateway: GatewayThread) -> None:
    """Every provider shows its bulkhead and retry budget; the store and readiness are reported."""
    assert chat(gateway).headers["x-fusebox-served-by"] == "fake/gpt-a"
    doc = status(gateway).json()
    fake2 = doc["providers"]["fake2"]
    assert fake2["kind"] == "openai"
    assert fake2["bulkhead"] == {
        "in_use": 0,
        "waiting": 0,
        "max_concurrent": 7,
        "max_waiting": 3,
        "rejected": 0,
    }
    budget = doc["providers"]["fake"]["retry_budget"]
    assert budget["requests"] == 1
    assert budget["retries"] == 0
    assert budget["available"] == pytest.approx(0.2 * 1 + 2 * 10)
    assert set(doc["providers"]) == {"fake", "fake2", "claude"}
    assert doc["store"] == {"kind": "local", "healthy": True, "reason": None}
    assert doc["ready"] is True
    assert doc["draining"] is False
    assert doc["started_at"] == 1000.0 + WALL_OFFSET
    assert doc["cache"]["stale_s"] == 86400


def test_with_an_admin_key_the_admin_api_needs_it_and_probes_do_not(
    upstream: FakeUpstream,
) -> None:
    """With ``admin.key_env`` set, ``/fusebox/status`` is 401 without the key and 200 with it."""
    body = CHAIN + '\n[admin]\nkey_env = "FBX_ADMIN"\n'
    env = {"FAKE_KEY": "k", "FBX_ADMIN": ADMIN_KEY}
    with running_gateway(config_text(upstream.url, body), env) as gw:
        denied = status(gw)
        assert denied.status_code == 401
        assert denied.json()["error"]["code"] == "invalid_api_key"
        assert denied.headers["www-authenticate"].startswith("Bearer")
        assert status(gw, "wrong-key").status_code == 401
        assert (
            status(gw, DEMO_KEY).status_code == 401
        )  # a tenant key is not the admin key
        assert status(gw, ADMIN_KEY).status_code == 200
        # The page is a static shell (its data needs the key); the probes need no key.
        assert httpx.get(gw.url + "/fusebox/", timeout=5).status_code == 200
        assert httpx.get(gw.url + "/metrics", timeout=5).status_code == 200
        assert httpx.get(gw.url + "/readyz", timeout=5).status_code == 200


def test_without_an_admin_key_the_admin_api_answers_loopback_only(
    upstream: FakeUpstream,
) -> None:
    """No key configured: a loopback client gets the status; any other client gets 403."""
    config = parse_config(config_text(upstream.url, CHAIN))
    with running_gateway(config, {"FAKE_KEY": "k"}) as gw:
        assert status(gw).status_code == 200
    # Litestar's test client is not on loopback (its client host is "testclient").
    with TestClient(create_app(config, environ={"FAKE_KEY": "k"})) as client:
        for path in ("/fusebox/status", "/fusebox/"):
            resp = client.get(path)
            assert resp.status_code == 403
            assert resp.json()["error"]["code"] == "admin_loopback_only"
        assert client.get("/readyz").status_code == 200
        assert client.get("/metrics").status_code == 200


def test_readyz_is_ready_once_started_and_not_ready_while_draining(
    gateway: GatewayThread,
) -> None:
    """``/readyz`` answers 200 when serving and 503 with the reason while draining."""
    ready = httpx.get(gateway.url + "/readyz", timeout=5)
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    gateway.runtime.draining = True
    try:
        draining = httpx.get(gateway.url + "/readyz", timeout=5)
        assert draining.status_code == 503
        assert draining.json() == {"status": "not_ready", "reason": "draining"}
        assert status(gateway).json()["ready"] is False
    finally:
        gateway.runtime.draining = False


def test_readyz_is_not_ready_before_the_lifespan_started(
    upstream: FakeUpstream,
) -> None:
    """An app whose lifespan has not run yet reports ``starting``."""
    app = create_app(
        parse_config(config_text(upstream.url, CHAIN)), environ={"FAKE_KEY": "k"}
    )
    assert asyncio.run(not_ready_reason(app.state.runtime)) == "starting"


def _readyz_with_store(upstream: FakeUpstream, store: str, clock: FakeClock) -> Any:
    config = parse_config(config_text(upstream.url, CHAIN + store))
    with TestClient(
        create_app(config, environ={"FAKE_KEY": "k"}, clock=clock)
    ) as client:
        first = client.get("/readyz")
        return first.status_code, first.json()


def test_readyz_is_not_ready_when_the_local_store_path_cannot_be_written(
    upstream: FakeUpstream, tmp_path: Path, clock: FakeClock
) -> None:
    """A store path that is a file (or under one) makes the gateway not ready."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for path in (blocker, blocker / "sub"):
        code, body = _readyz_with_store(upstream, f'[store]\npath = "{path}"\n', clock)
        assert code == 503
        assert body["status"] == "not_ready"
        assert "store path" in body["reason"]
    fresh = tmp_path / "not" / "yet" / "there"
    code, _ = _readyz_with_store(upstream, f'[store]\npath = "{fresh}"\n', clock)
    assert code == 200
    assert not fresh.exists()  # checked, never created by the probe


def test_readyz_caches_the_store_check_for_a_second(
    gateway: GatewayThread, clock: FakeClock, tmp_path: Path
) -> None:
    """A store that breaks shows up within a second, not on every probe."""
    assert httpx.get(gateway.url + "/readyz", timeout=5).status_code == 200
    (tmp_path / "store").write_text("now a file")
    assert httpx.get(gateway.url + "/readyz", timeout=5).status_code == 200
    clock.advance(1.0)
    assert httpx.get(gateway.url + "/readyz", timeout=5).status_code == 503


def _poll_readyz(gw: GatewayThread, want: int, within_s: float = 5.0) -> httpx.Response:
    """GET /readyz until it answers ``want`` (a store's first sync takes a moment)."""
    ticker = threading.Event()
    seen = ""
    for _ in range(int(within_s / 0.05)):
        resp = httpx.get(gw.url + "/readyz", timeout=5)
        if resp.status_code == want:
            return resp
        seen = resp.text
        ticker.wait(0.05)
    raise AssertionError(f"/readyz did not answer {want} within {within_s}s: {seen}")


def test_readyz_is_not_ready_when_redis_is_unreachable(upstream: FakeUpstream) -> None:
    """A Redis store nobody listens on makes the gateway not ready, and says why."""
    store = '[store]\nkind = "redis"\nurl = "redis://127.0.0.1:1/0"\n'
    with running_gateway(
        config_text(upstream.url, CHAIN + store), {"FAKE_KEY": "k"}
    ) as gw:
        body = _poll_readyz(gw, 503).json()
        assert body["status"] == "not_ready"
        assert "redis" in body["reason"]
        assert status(gw).json()["store"]["healthy"] is False


@pytest.mark.redis
def test_readyz_is_ready_with_a_reachable_redis(upstream: FakeUpstream) -> None:
    """A Redis store that answers is ready."""
    store = '[store]\nkind = "redis"\nurl = "redis://127.0.0.1:6379/0"\n'
    with running_gateway(
        config_text(upstream.url, CHAIN + store), {"FAKE_KEY": "k"}
    ) as gw:
        assert _poll_readyz(gw, 200).json() == {"status": "ready"}
        assert status(gw).json()["store"]["kind"] == "redis"
