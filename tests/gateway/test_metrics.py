"""``GET /metrics``: exact values after scripted faults, parsed as Prometheus text."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Histo, status_class
from tests.fakes.clock import FakeClock
from tests.harness import DEMO_KEY, GatewayThread, config_text, running_gateway

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from gateway.fakeupstream import FakeUpstream

CHAIN = """
[providers.fake.retry]
attempts = {attempts}
budget_ratio = {ratio}
budget_min_per_s = {floor}

[providers.fake.breaker]
min_calls = 3
failure_rate = 0.5
open_s = 10

[models.chat]
chain = ["fake/gpt-a", "fake2/gpt-b"]
"""
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(gw: GatewayThread) -> Samples:
    """Fetch ``/metrics`` (no key) and index every sample by name and labels."""
    resp = httpx.get(gw.url + "/metrics", timeout=5)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            samples[s.name, frozenset(s.labels.items())] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """Return one sample's value (0 when the series does not exist yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def chat(gw: GatewayThread, model: str = "chat", **extra: object) -> httpx.Response:
    """POST one chat completion as tenant acme."""
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra},
        headers={"Authorization": f"Bearer {DEMO_KEY}"},
        timeout=10,
    )


def serve(
    upstream: FakeUpstream, *, attempts: int = 1, ratio: float = 0.2, floor: float = 2
) -> Iterator[GatewayThread]:
    """Serve the two-rung chain with the given retry settings on a fake clock."""
    body = CHAIN.format(attempts=attempts, ratio=ratio, floor=floor)
    text = config_text(upstream.url, body)
    with running_gateway(text, {"FAKE_KEY": "k"}, FakeClock()) as gw:
        yield gw


@pytest.fixture
def gateway(upstream: FakeUpstream) -> Iterator[GatewayThread]:
    """Serve the chain without retries, so every count is exact."""
    yield from serve(upstream)


def test_a_503_storm_opens_the_breaker_and_every_counter_says_so(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """Three 503s open the primary's breaker; the metrics count attempts, fallbacks and tokens exactly."""
    upstream.set_mode("gpt-a", "503")
    answers = [chat(gateway) for _ in range(5)]
    assert all(r.status_code == 200 for r in answers)
    assert (
        answers[-1].headers["x-fusebox-attempts"] == "fake/gpt-a=open; fake2/gpt-b=200"
    )
    m = scrape(gateway)
    assert value(m, "fusebox_breaker_state", deployment="fake/gpt-a") == 2.0
    assert value(m, "fusebox_breaker_state", deployment="fake2/gpt-b") == 0.0
    transitions = "fusebox_breaker_transitions_total"
    opened = {"deployment": "fake/gpt-a", "from_state": "closed", "to_state": "open"}
    assert value(m, transitions, **opened) == 1
    attempts = "fusebox_upstream_attempts_total"
    assert value(m, attempts, deployment="fake/gpt-a", outcome="503") == 3
    assert value(m, attempts, deployment="fake/gpt-a", outcome="open") == 2
    assert value(m, attempts, deployment="fake2/gpt-b", outcome="200") == 5
    served = {"tenant": "acme", "alias": "chat", "served_by": "fake2/gpt-b"}
    assert value(m, "fusebox_requests_total", **served, code="2xx") == 5
    assert value(m, "fusebox_degraded_total", rung="fake2/gpt-b", kind="fallback") == 5
    prompt = sum(r.json()["usage"]["prompt_tokens"] for r in answers)
    completion = sum(r.json()["usage"]["completion_tokens"] for r in answers)
    tokens = "fusebox_tokens_total"
    assert value(m, tokens, deployment="fake2/gpt-b", direction="input") == prompt
    assert value(m, tokens, deployment="fake2/gpt-b", direction="output") == completion
    count = "fusebox_request_duration_seconds_count"
    assert value(m, count, alias="chat", stream="false") == 5
    inf = {"alias": "chat", "stream": "false", "le": "+Inf"}
    assert value(m, "fusebox_request_duration_seconds_bucket", **inf) == 5
    assert value(m, "fusebox_retries_total", provider="fake") == 0


def test_retries_and_an_empty_retry_budget_are_counted_per_provider(
    upstream: FakeUpstream,
) -> None:
    """Two retries that succeed count two; a retry refused by an empty budget counts one exhaustion."""
    for gw in serve(upstream, attempts=3):
        upstream.script("gpt-a", "503", "503")
        resp = chat(gw)
        assert resp.headers["x-fusebox-attempts"] == "fake/gpt-a=503,503,200"
        m = scrape(gw)
        assert value(m, "fusebox_retries_total", provider="fake") == 2
        assert value(m, "fusebox_retry_budget_exhausted_total", provider="fake") == 0
    for gw in serve(upstream, attempts=3, ratio=0, floor=0):
        upstream.set_mode("gpt-a", "503")
        resp = chat(gw)
        assert (
            resp.headers["x-fusebox-attempts"]
            == "fake/gpt-a=503,budget; fake2/gpt-b=200"
        )
        m = scrape(gw)
        assert value(m, "fusebox_retries_total", provider="fake") == 0
        assert value(m, "fusebox_retry_budget_exhausted_total", provider="fake") == 1
        outcome = {"deployment": "fake/gpt-a", "outcome": "budget"}
        assert value(m, "fusebox_upstream_attempts_total", **outcome) == 1


def test_a_429_with_a_long_retry_after_counts_a_pause_and_shows_the_paused_gauge(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A 429 pauses the deployment: the pause counter and the paused gauge both show it."""
    upstream.script("gpt-a", "429ra30")
    assert (
        chat(gateway).headers["x-fusebox-attempts"] == "fake/gpt-a=429; fake2/gpt-b=200"
    )
    m = scrape(gateway)
    assert value(m, "fusebox_pauses_total", deployment="fake/gpt-a") == 1
    assert value(m, "fusebox_deployment_paused", deployment="fake/gpt-a") == 1
    assert value(m, "fusebox_deployment_paused", deployment="fake2/gpt-b") == 0
    assert value(m, "fusebox_breaker_state", deployment="fake/gpt-a") == 0


def test_streams_record_time_to_first_token_and_a_cut_as_its_own_outcome(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A stream observes TTFT; a stream cut after content counts a ``cut`` attempt outcome."""
    upstream.script("gpt-a", "ok", "cut2")
    for _ in range(2):
        with httpx.stream(
            "POST",
            gateway.url + "/v1/chat/completions",
            json={
                "model": "chat",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
            headers={"Authorization": f"Bearer {DEMO_KEY}"},
            timeout=10,
        ) as resp:
            assert resp.status_code == 200
            resp.read()
    m = scrape(gateway)
    assert value(m, "fusebox_time_to_first_token_seconds_count", alias="chat") == 2
    assert (
        value(m, "fusebox_request_duration_seconds_count", alias="chat", stream="true")
        == 2
    )
    attempts = "fusebox_upstream_attempts_total"
    assert value(m, attempts, deployment="fake/gpt-a", outcome="200") == 2
    assert value(m, attempts, deployment="fake/gpt-a", outcome="cut") == 1


def test_client_errors_keep_label_values_bounded(gateway: GatewayThread) -> None:
    """An unknown model and a bad key are counted under fixed labels, never the client's text."""
    assert chat(gateway, model="no-such-model-1234").status_code == 404
    bad = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "chat", "messages": []},
        headers={"Authorization": "Bearer sk-wrong"},
        timeout=5,
    )
    assert bad.status_code == 401
    m = scrape(gateway)
    labels = {"tenant": "acme", "alias": "unknown", "served_by": "none", "code": "4xx"}
    assert value(m, "fusebox_requests_total", **labels) == 1
    anon = {"tenant": "none", "alias": "unknown", "served_by": "none", "code": "4xx"}
    assert value(m, "fusebox_requests_total", **anon) == 1
    assert not any("no-such-model" in str(key) for key in m)


def test_bulkhead_budget_and_build_gauges_are_read_at_scrape_time(
    gateway: GatewayThread,
) -> None:
    """Live-state gauges exist for every provider before any traffic."""
    m = scrape(gateway)
    for provider in ("fake", "fake2", "claude"):
        assert value(m, "fusebox_bulkhead_in_use", provider=provider) == 0
        assert value(m, "fusebox_bulkhead_waiting", provider=provider) == 0
        assert value(m, "fusebox_bulkhead_max_concurrent", provider=provider) == 100
        assert value(m, "fusebox_bulkhead_rejected_total", provider=provider) == 0
        assert value(m, "fusebox_retry_budget_available", provider=provider) == 20
    assert any(name == "fusebox_build_info" for name, _ in m)


def test_histogram_buckets_are_cumulative_and_status_classes_are_named() -> None:
    """A value on a bucket bound counts in that bucket; statuses map to their class."""
    histo = Histo((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 2.0):
        histo.observe(v)
    assert histo.buckets() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert histo.total == pytest.approx(2.65)
    assert [status_class(s) for s in (200, 429, 503, None)] == [
        "2xx",
        "4xx",
        "5xx",
        "none",
    ]


CACHED = """
[cache]
fresh_s = {fresh_s}

[store]
path = "{path}"

[providers.fake.retry]
attempts = 1

[models.chat]
chain = ["fake/gpt-a", "@cache"]
"""


def served_from_cache(gw: GatewayThread, within_s: float = 5.0) -> list[httpx.Response]:
    """Send the same request until the cache answers it; return every answer."""
    ticker = threading.Event()
    answers: list[httpx.Response] = []
    for _ in range(int(within_s / 0.05)):
        answers.append(chat(gw))
        if answers[-1].headers.get("x-fusebox-served-by") == "@cache":
            return answers
        ticker.wait(0.05)  # the answer is stored in the background
    raise AssertionError(f"the cache did not answer within {within_s}s")


@pytest.mark.parametrize(("fresh_s", "kind"), [(0, "stale"), (60, "fresh")])
def test_cache_answers_count_as_hits_and_a_stale_one_as_degraded(
    upstream: FakeUpstream, tmp_path: Path, fresh_s: int, kind: str
) -> None:
    """The ``@cache`` rung counts a stale hit and a degraded answer; ``fresh_s`` counts a fresh hit."""
    body = CACHED.format(fresh_s=fresh_s, path=tmp_path / "store")
    with running_gateway(config_text(upstream.url, body), {"FAKE_KEY": "k"}) as gw:
        assert chat(gw).headers["x-fusebox-served-by"] == "fake/gpt-a"
        if kind == "stale":
            upstream.set_mode("gpt-a", "503")
        served_from_cache(gw)
        m = scrape(gw)
    assert value(m, "fusebox_cache_hits_total", kind=kind) == 1
    degraded = 1 if kind == "stale" else 0
    assert value(m, "fusebox_degraded_total", rung="@cache", kind="cache") == degraded
    served = {"tenant": "acme", "alias": "chat", "served_by": "@cache", "code": "2xx"}
    assert value(m, "fusebox_requests_total", **served) == 1
    assert not any(
        d == "@cache" for (name, labels) in m for k, d in labels if k == "deployment"
    )
