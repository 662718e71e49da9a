"""The resilience stack seen from outside: statuses, headers, and what the upstream saw."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import openai
import pytest

from tests.harness import DEMO_KEY, GatewayThread, config_text, running_gateway

if TYPE_CHECKING:
    from collections.abc import Iterator

    from gateway.fakeupstream import FakeUpstream

TIMEOUTS = """
[defaults.timeouts]
connect_s = 1
first_token_s = 0.3
read_s = 0.3
attempt_s = 5
"""
CHAINS = """
[providers.fake.breaker]
min_calls = 100

[models.chat]
chain = ["fake/gpt-a", "fake2/gpt-b"]

[models.solo]
chain = ["fake/gpt-solo"]

[models.tiers]
chain = ["fake/gpt-small", "fake2/gpt-large"]
"""


@pytest.fixture
def gateway(upstream: FakeUpstream) -> Iterator[GatewayThread]:
    """Serve a gateway with short timeouts whose chains point at the fake upstream."""
    with running_gateway(
        config_text(upstream.url, CHAINS, defaults=TIMEOUTS), {"FAKE_KEY": "k"}
    ) as gw:
        yield gw


def ask(
    gw: GatewayThread,
    model: str = "chat",
    *,
    headers: dict[str, str] | None = None,
    **extra: object,
) -> httpx.Response:
    """POST one chat completion with raw HTTP and return the response."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {DEMO_KEY}", **(headers or {})},
        timeout=10,
    )


def sse_events(resp: httpx.Response) -> list[str]:
    """Return the ``data:`` payloads of an SSE body."""
    return [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]


def test_500_once_is_retried_on_the_same_deployment(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A single 500 is retried on the same deployment and the client sees 200."""
    upstream.script("gpt-a", "500", "ok")
    resp = ask(gateway)
    assert resp.status_code == 200
    assert resp.headers["x-fusebox-attempts"] == "fake/gpt-a=500,200"
    assert resp.headers["x-fusebox-served-by"] == "fake/gpt-a"
    assert upstream.count("gpt-b") == 0


def test_429_with_retry_after_is_honoured(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A 429 with Retry-After is retried on the same deployment after that wait."""
    upstream.script("gpt-a", "429ra0.2", "ok")
    resp = ask(gateway)
    assert resp.status_code == 200
    seen = upstream.records("gpt-a")
    assert len(seen) == 2
    assert seen[1].time - seen[0].time >= 0.2
    assert resp.headers["x-fusebox-attempts"] == "fake/gpt-a=429,200"


def test_persistent_503_fails_over_within_bounded_attempts(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A deployment answering 503 is tried ``attempts`` times, then the next rung answers."""
    upstream.set_mode("gpt-a", "503")
    resp = ask(gateway)
    assert resp.status_code == 200
    assert upstream.count("gpt-a") == 3
    assert resp.headers["x-fusebox-served-by"] == "fake2/gpt-b"
    assert resp.headers["x-fusebox-degraded"] == "fallback"
    assert resp.json()["model"] == "gpt-b"


def test_persistent_429_pauses_the_deployment_and_fails_over(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A long Retry-After fails over at once and pauses the deployment for later requests."""
    upstream.set_mode("gpt-a", "429ra30")
    first = ask(gateway)
    second = ask(gateway)
    assert first.status_code == second.status_code == 200
    assert upstream.count("gpt-a") == 1
    assert second.headers["x-fusebox-attempts"] == "fake/gpt-a=paused; fake2/gpt-b=200"


def test_reset_before_headers_is_retried(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A connection reset before headers is retried on the same deployment."""
    upstream.script("gpt-a", "reset", "ok")
    resp = ask(gateway)
    assert resp.status_code == 200
    assert resp.headers["x-fusebox-attempts"] == "fake/gpt-a=connect,200"


def test_silent_upstream_fails_over_after_first_token_timeout_without_retry(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A deployment that never answers is abandoned after first_token_s and not retried."""
    upstream.set_mode("gpt-a", "hang")
    resp = ask(gateway)
    assert resp.status_code == 200
    assert upstream.count("gpt-a") == 1
    assert resp.headers["x-fusebox-attempts"] == "fake/gpt-a=timeout; fake2/gpt-b=200"


def test_slow_first_token_in_a_stream_fails_over_before_any_byte(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A stream whose first content is too slow fails over; the client sees one clean stream."""
    upstream.set_mode("gpt-a", "slowfirst2000")
    resp = ask(gateway, stream=True)
    assert resp.status_code == 200
    events = sse_events(resp)
    assert events[-1] == "[DONE]"
    assert resp.headers["x-fusebox-served-by"] == "fake2/gpt-b"
    models = {json.loads(e)["model"] for e in events[:-1]}
    assert models == {"gpt-b"}


@pytest.mark.parametrize("fault", ["cut3", "stall3", "malformed3", "errorevent3"])
def test_failure_after_content_is_one_in_band_error_without_done(
    gateway: GatewayThread, upstream: FakeUpstream, fault: str
) -> None:
    """After content reached the client, a failure ends the stream with an error event, never [DONE]."""
    upstream.set_mode("gpt-solo", fault)
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=DEMO_KEY, max_retries=0)
    stream = sdk.chat.completions.create(
        model="solo", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    got: list[str] = []
    with pytest.raises(openai.APIError):
        got.extend(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "".join(got)
    upstream.set_mode("gpt-solo", None)
    assert ask(gateway, "solo").status_code == 200


def test_malformed_chunk_before_content_fails_over(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A malformed event before any content is a normal failover, invisible to the client."""
    upstream.set_mode("gpt-a", "malformed0")
    resp = ask(gateway, stream=True)
    assert sse_events(resp)[-1] == "[DONE]"
    assert resp.headers["x-fusebox-served-by"] == "fake2/gpt-b"


def test_missing_done_after_a_finished_answer_is_a_success(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """An upstream that forgets ``[DONE]`` after finishing still gives the client a whole stream."""
    upstream.set_mode("gpt-a", "nodone")
    resp = ask(gateway, stream=True)
    events = sse_events(resp)
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"
    assert upstream.count("gpt-b") == 0


def test_context_length_goes_to_the_next_rung_without_a_retry(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """``context_length_exceeded`` moves to the larger model once, with no blind resend."""
    upstream.set_mode("gpt-small", "ctx")
    resp = ask(gateway, "tiers")
    assert resp.status_code == 200
    assert upstream.count("gpt-small") == 1
    assert resp.headers["x-fusebox-served-by"] == "fake2/gpt-large"


def test_content_policy_is_returned_as_is_without_retry(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A content-policy refusal goes back to the client with its code; nothing else is tried."""
    upstream.set_mode("gpt-a", "policy")
    resp = ask(gateway)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "content_policy_violation"
    assert upstream.count("gpt-a") == 1
    assert upstream.count("gpt-b") == 0


def test_exhausted_chain_gives_the_meaningful_error_and_stops_client_retries(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """When every rung fails upstream the client gets 502 and ``x-should-retry: false``."""
    upstream.set_mode("gpt-a", "503")
    upstream.set_mode("gpt-b", "500")
    resp = ask(gateway)
    assert resp.status_code == 502
    assert resp.headers["x-should-retry"] == "false"
    assert resp.json()["error"]["message"]


def test_exhausted_chain_of_timeouts_is_504(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """When the last rung timed out the client gets 504."""
    upstream.set_mode("gpt-a", "503")
    upstream.set_mode("gpt-b", "hang")
    assert ask(gateway).status_code == 504


def test_deadline_header_bounds_the_whole_request(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """``x-fusebox-deadline-s`` caps the request: a hanging chain gives 504 in time."""
    upstream.set_mode("gpt-solo", "hang")
    resp = ask(gateway, "solo", headers={"x-fusebox-deadline-s": "0.2"})
    assert resp.status_code == 504
    assert resp.json()["error"]["code"] in {"deadline_exceeded", "upstream_timeout"}


def test_client_read_timeout_hint_lowers_the_deadline(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """The SDK's ``x-stainless-read-timeout`` makes the gateway answer before the client gives up."""
    upstream.set_mode("gpt-a", "hang")
    upstream.set_mode("gpt-b", "hang")
    resp = ask(gateway, headers={"x-stainless-read-timeout": "0.7"})
    assert resp.status_code == 504


SLOW_BUT_HEALTHY = """
[defaults.timeouts]
first_token_s = 3
read_s = 0.2

[models.chat]
chain = ["fake/gpt-a", "fake2/gpt-b"]
"""


def test_slow_whole_answer_within_first_token_s_is_not_cut_by_read_s(
    upstream: FakeUpstream,
) -> None:
    """A plain answer slower than ``read_s`` but within ``first_token_s`` is served, not failed over."""
    upstream.set_mode("gpt-a", "delay500")
    text = config_text(upstream.url, SLOW_BUT_HEALTHY)
    with running_gateway(text, {"FAKE_KEY": "k"}) as gw:
        resp = ask(gw)
    assert resp.status_code == 200
    assert resp.headers["x-fusebox-attempts"] == "fake/gpt-a=200"


def test_429_without_retry_after_is_retried_after_its_pause(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A bare 429 pauses the deployment briefly; the retry waits it out and succeeds."""
    upstream.script("gpt-a", "429", "ok")
    resp = ask(gateway)
    assert resp.status_code == 200
    assert resp.headers["x-fusebox-attempts"] == "fake/gpt-a=429,200"


def test_non_utf8_body_is_a_400(gateway: GatewayThread) -> None:
    """A body that is not UTF-8 gets a 400 in the OpenAI format, not a 500."""
    resp = httpx.post(
        gateway.url + "/v1/chat/completions",
        content=b'{"model": "chat", "messages": "\xff\xfe"}',
        headers={"Authorization": f"Bearer {DEMO_KEY}"},
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"


DEADLINES = """
[models.solo]
chain = ["fake/gpt-solo"]

[models.static]
chain = ["fake/gpt-a", "@static"]
static = "Busy, try later."

[defaults.timeouts]
first_token_s = 5
read_s = 5
"""


@pytest.fixture
def patient(upstream: FakeUpstream) -> Iterator[GatewayThread]:
    """Serve a gateway with long timeouts, so only the client's deadline cuts."""
    with running_gateway(config_text(upstream.url, DEADLINES), {"FAKE_KEY": "k"}) as gw:
        yield gw


def test_deadline_mid_stream_is_no_verdict_on_a_healthy_deployment(
    patient: GatewayThread, upstream: FakeUpstream
) -> None:
    """A stream cut by the client's short deadline ends in-band and never counts against the breaker."""
    upstream.set_mode("gpt-solo", "gap300~words20")
    resp = ask(patient, "solo", stream=True, headers={"x-fusebox-deadline-s": "1"})
    events = sse_events(resp)
    assert "[DONE]" not in events
    assert "error" in json.loads(events[-1])
    breaker = patient.runtime.deployments["fake/gpt-solo"].breaker
    assert breaker.calls == 0
    assert breaker.state.value == "closed"


def test_static_rung_answers_when_the_deadline_runs_out(
    patient: GatewayThread, upstream: FakeUpstream
) -> None:
    """When the deadline ends the live rungs, the instant @static rung still answers."""
    upstream.set_mode("gpt-a", "hang")
    resp = ask(patient, "static", headers={"x-fusebox-deadline-s": "0.5"})
    assert resp.status_code == 200
    assert resp.headers["x-fusebox-served-by"] == "@static"
    assert resp.json()["choices"][0]["message"]["content"] == "Busy, try later."


NO_BUDGET = """
[defaults.retry]
budget_ratio = 0
budget_min_per_s = 0

[models.solo]
chain = ["fake/gpt-solo"]
"""


def test_empty_budget_keeps_the_upstream_error(upstream: FakeUpstream) -> None:
    """With no retry budget the client gets the upstream's failure (502), not a local 503."""
    upstream.set_mode("gpt-solo", "503")
    text = config_text(upstream.url, NO_BUDGET).replace(
        "[defaults.retry]\nbase_s = 0.01\nmax_s = 0.05\n", ""
    )
    with running_gateway(text, {"FAKE_KEY": "k"}) as gw:
        resp = ask(gw, "solo")
    assert resp.status_code == 502
    assert resp.headers["x-should-retry"] == "false"
    assert resp.headers["x-fusebox-attempts"] == "fake/gpt-solo=503,budget"
