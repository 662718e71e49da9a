"""``fusebox serve --workers 2``: two worker processes share the configured Redis store."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import httpx
import pytest
import redis

from tests.fleet import fleet_config
from tests.harness import DEMO_KEY
from tests.redisserver import free_port, wait_until

pytestmark = pytest.mark.redis


if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from gateway.fakeupstream import FakeUpstream

WORKERS = """
[providers.fake.retry]
attempts = 1

[providers.fake.breaker]
min_calls = 2
failure_rate = 0.5
open_s = 30

[models.chat]
chain = ["fake/gpt-w", "fake2/gpt-b"]
"""


@contextlib.contextmanager
def serve_workers(tmp_path: Path, text: str, workers: int) -> Iterator[str]:
    """Run ``fusebox serve --workers N`` on a free loopback port; yield its URL."""
    config = tmp_path / "fusebox.toml"
    config.write_text(text)
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "FAKE_KEY": "k"},
            cwd=tmp_path,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: _ready(url), 20.0, f"fusebox serve ready ({log.read_text()})"
        )
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _ready(url: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(url + "/readyz", timeout=1).status_code == 200
    return False


def _replicas_in(redis_url: str, key: str) -> int:
    client = redis.Redis.from_url(redis_url, socket_timeout=1)
    try:
        return int(client.hlen(key))
    finally:
        client.close()


def _chat(url: str) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions",
        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {DEMO_KEY}"},
        timeout=10,
    )


@pytest.mark.timeout(60)
def test_workers_share_one_store_and_one_breaker(
    upstream: FakeUpstream, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """Both workers join the store, and once one trips, no worker calls the broken model."""
    text = fleet_config(
        upstream, redis_url, redis_prefix, WORKERS, globex="max_concurrent = 50"
    )
    with serve_workers(tmp_path, text, 2) as url:
        tenant_key = f"{redis_prefix}tenant:globex"
        wait_until(lambda: _replicas_in(redis_url, tenant_key) == 2, 5.0, "two workers")
        upstream.set_mode("gpt-w", "503")
        for _ in range(20):
            if "fake/gpt-w=open" in _chat(url).headers["x-fusebox-attempts"]:
                break
        else:
            raise AssertionError("the breaker never opened")
        calls = upstream.count("gpt-w")
        for _ in range(20):
            resp = _chat(url)
            assert (
                resp.headers["x-fusebox-attempts"] == "fake/gpt-w=open; fake2/gpt-b=200"
            )
        assert upstream.count("gpt-w") == calls
