"""The request log and event log: fields per line, both formats, and no secrets ever."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest

from gateway import logsetup
from gateway.logsetup import JsonFormatter, configure_from_env, configure_logging
from gateway.reqlog import LogEvent, log_event
from tests.harness import DEMO_KEY, GatewayThread, config_text, running_gateway

if TYPE_CHECKING:
    from collections.abc import Iterator

    from gateway.fakeupstream import FakeUpstream

UPSTREAM_KEY = "sk-upstream-SECRET-4242"
ADMIN_KEY = "fbx-admin-SECRET-7777"
PROMPT = "zebra quokka PROMPTSENTINEL narwhal"
CHAIN = """
[admin]
key_env = "FBX_ADMIN"

[providers.fake.retry]
attempts = 1

[providers.fake.breaker]
min_calls = 2
failure_rate = 0.5

[models.chat]
chain = ["fake/gpt-a", "fake2/gpt-b"]
"""


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the process's logging back as it was after the test."""
    root = logging.getLogger()
    fusebox = logging.getLogger("fusebox")
    saved = (root.level, list(root.handlers), fusebox.level, logging.logMultiprocessing)
    current = logsetup._current
    yield
    if logsetup._current is not None:
        logsetup._current.stop()
    logsetup._current = current
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    fusebox.setLevel(saved[2])
    logging.logMultiprocessing = saved[3]


@pytest.fixture
def gateway(upstream: FakeUpstream) -> Iterator[GatewayThread]:
    """Serve the two-rung chain with a provider key and an admin key set."""
    env = {"FAKE_KEY": UPSTREAM_KEY, "FBX_ADMIN": ADMIN_KEY}
    with running_gateway(config_text(upstream.url, CHAIN), env) as gw:
        yield gw


def chat(gw: GatewayThread, **extra: object) -> httpx.Response:
    """POST one chat completion with the sentinel prompt as tenant acme."""
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json={
            "model": "chat",
            "messages": [{"role": "user", "content": PROMPT}],
            **extra,
        },
        headers={"Authorization": f"Bearer {DEMO_KEY}"},
        timeout=10,
    )


def run_traffic(gw: GatewayThread, upstream: FakeUpstream) -> list[httpx.Response]:
    """Open the primary's breaker with two 503s, then stream one answer; return the answers."""
    upstream.set_mode("gpt-a", "503")
    answers = [chat(gw), chat(gw)]
    answers.append(chat(gw, stream=True, stream_options={"include_usage": True}))
    status = httpx.get(
        gw.url + "/fusebox/status",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=5,
    )
    assert status.status_code == 200
    return answers


def json_lines(text: str) -> list[dict[str, Any]]:
    """Decode one JSON object per line."""
    return [msgspec.json.decode(line) for line in text.splitlines() if line.strip()]


def assert_no_secret(text: str, answers: list[httpx.Response]) -> None:
    """Check that no key, prompt or completion text made it into ``text``."""
    for secret in (DEMO_KEY, UPSTREAM_KEY, ADMIN_KEY, "PROMPTSENTINEL", "quokka"):
        assert secret not in text
    for resp in answers[:2]:
        completion = resp.json()["choices"][0]["message"]["content"]
        assert completion
        assert completion not in text


@pytest.fixture
def json_log(
    restore_logging: None, gateway: GatewayThread, upstream: FakeUpstream
) -> tuple[str, list[httpx.Response]]:
    """Run the traffic with ``--log-format json`` logging; return the output and answers."""
    out = io.StringIO()
    setup = configure_logging("info", "json", out)
    answers = run_traffic(gateway, upstream)
    setup.stop()  # flushes the listener thread
    return out.getvalue(), answers


def test_json_log_has_one_line_per_request_with_every_field(
    json_log: tuple[str, list[httpx.Response]],
) -> None:
    """``--log-format json`` writes one object per request with every field, and no secret."""
    text, answers = json_log
    requests = [line for line in json_lines(text) if line.get("event") == "request"]
    assert len(requests) == 3
    first = requests[0]
    assert (first["logger"], first["level"]) == ("fusebox.access", "info")
    assert first["request_id"] == answers[0].headers["x-request-id"]
    assert first["attempts"] == answers[0].headers["x-fusebox-attempts"]
    assert (first["tenant"], first["alias"], first["served_by"]) == (
        "acme",
        "chat",
        "fake2/gpt-b",
    )
    assert (first["status"], first["degraded"], first["stream"]) == (
        200,
        "fallback",
        False,
    )
    usage = answers[0].json()["usage"]
    assert first["prompt_tokens"] == usage["prompt_tokens"]
    assert first["completion_tokens"] == usage["completion_tokens"]
    assert first["duration_ms"] >= first["ttft_ms"] >= 0
    streamed = requests[2]
    assert streamed["stream"] is True
    assert streamed["attempts"] == "fake/gpt-a=open; fake2/gpt-b=200"
    assert streamed["completion_tokens"] > 0
    assert_no_secret(text, answers)


def test_json_log_has_breaker_transitions_as_their_own_events(
    json_log: tuple[str, list[httpx.Response]],
) -> None:
    """A breaker opening is one ``breaker_transition`` event with from, to and the reason."""
    text, _ = json_log
    [opened] = [
        line for line in json_lines(text) if line.get("event") == "breaker_transition"
    ]
    assert (opened["logger"], opened["level"]) == ("fusebox.events", "warning")
    assert (opened["deployment"], opened["from"], opened["to"]) == (
        "fake/gpt-a",
        "closed",
        "open",
    )
    assert "failure rate 100%" in opened["reason"]
    assert opened["retry_at"] > opened["at"]
    assert opened["remote"] is False


@pytest.mark.usefixtures("restore_logging")
def test_text_log_is_one_readable_line_per_request(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """``--log-format text`` writes a single readable line per request, and no secret."""
    out = io.StringIO()
    setup = configure_logging("info", "text", out)
    answers = run_traffic(gateway, upstream)
    setup.stop()
    text = out.getvalue()
    [line] = [
        ln for ln in text.splitlines() if answers[0].headers["x-request-id"] in ln
    ]
    assert " INFO fusebox.access: " in line
    assert "acme chat -> fake2/gpt-b 200 " in line
    assert 'attempts="fake/gpt-a=503; fake2/gpt-b=200"' in line
    assert "degraded=fallback" in line
    assert "breaker fake/gpt-a: closed -> open (failure rate 100%" in text
    assert_no_secret(text, answers)


def test_records_carry_structured_events_for_any_handler(
    gateway: GatewayThread, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """Other handlers (here caplog) get the access record with its fields, and no secret even at DEBUG."""
    caplog.set_level(logging.DEBUG)
    answers = run_traffic(gateway, upstream)
    access = [r for r in caplog.records if r.name == "fusebox.access"]
    assert len(access) == 3
    event = access[0].args[0]  # type: ignore[index]
    assert isinstance(event, LogEvent)
    assert event.event == "request"
    assert event.fields["request_id"] == answers[0].headers["x-request-id"]
    assert answers[0].headers["x-request-id"] in access[0].getMessage()
    assert_no_secret(caplog.text, answers)


@pytest.mark.usefixtures("restore_logging")
def test_other_events_and_foreign_records_are_json_too() -> None:
    """``log_event`` (config reloads) and plain library records become JSON objects too."""
    out = io.StringIO()
    setup = configure_logging("info", "json", out)
    log_event(
        "config_reload", ok=False, path="/etc/fusebox.toml", errors=["models.x: bad"]
    )
    logging.getLogger("fusebox.server").warning("plain %s", "message")
    logging.getLogger("some.library").info("not shown: libraries log at WARNING")
    try:
        raise ValueError("boom")  # noqa: TRY301
    except ValueError:
        logging.getLogger("fusebox").exception("failed")
    setup.stop()
    reload_line, plain, failed = json_lines(out.getvalue())
    assert reload_line["event"] == "config_reload"
    assert reload_line["errors"] == ["models.x: bad"]
    assert reload_line["ok"] is False
    assert plain["message"] == "plain message"
    assert plain["logger"] == "fusebox.server"
    assert "ValueError: boom" in failed["exc"]
    text = str(LogEvent("config_reload", {"ok": True, "path": "/etc/a b.toml"}))
    assert text == 'config_reload ok=True path="/etc/a b.toml"'


@pytest.mark.usefixtures("restore_logging")
def test_a_worker_process_takes_the_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``configure_from_env`` sets up logging as ``serve`` did, once per process."""
    monkeypatch.setattr(logsetup, "_current", None)
    monkeypatch.setenv(logsetup.LOG_ENV, "debug:json")
    configure_from_env()
    setup = logsetup._current
    assert setup is not None
    assert logging.getLogger("fusebox").level == logging.DEBUG
    assert isinstance(setup.listener.handlers[0].formatter, JsonFormatter)
    configure_from_env()
    assert logsetup._current is setup
