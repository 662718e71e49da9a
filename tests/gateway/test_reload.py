"""Hot reload over ``POST /fusebox/reload``: state kept, bad files refused, streams finish."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import httpx
import pytest

from gateway.config import parse_config
from gateway.metrics import Metrics
from gateway.reload import Reloader, carry_state
from gateway.runtime import Runtime
from gateway.server import CONFIG_ENV
from policies.breaker import BreakerState
from tests.harness import DEMO_KEY, config_text, running_gateway

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from gateway.fakeupstream import FakeUpstream
    from tests.harness import GatewayThread

SMALL_BREAKER = """
[defaults.breaker]
min_calls = 2
open_s = 60
"""
CHAT = """
[models.chat]
chain = ["fake/gpt-a", "fake2/gpt-b", "@static"]
static = "busy"
"""
EXTRA = """
[models.extra]
chain = ["fake2/gpt-b"]
"""
AUTH = {"Authorization": f"Bearer {DEMO_KEY}"}
ENV = {"FAKE_KEY": "k"}


def chat(gw: GatewayThread, model: str = "chat", **extra: object) -> httpx.Response:
    """POST one chat completion and return the response."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(
        gw.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=10
    )


def reload(gw: GatewayThread, **headers: str) -> httpx.Response:
    """POST /fusebox/reload and return the response."""
    return httpx.post(gw.url + "/fusebox/reload", headers=headers, timeout=10)


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``$FUSEBOX_CONFIG`` at a file in the test's directory."""
    path = tmp_path / "fusebox.toml"
    monkeypatch.setenv(CONFIG_ENV, str(path))
    return path


@pytest.fixture
def gateway(upstream: FakeUpstream, config_file: Path) -> Iterator[GatewayThread]:
    """Serve the chat chain from the config file, with a small breaker."""
    text = config_text(upstream.url, CHAT, defaults=SMALL_BREAKER)
    config_file.write_text(text)
    with running_gateway(text, ENV) as gw:
        yield gw


def test_reload_keeps_breaker_pause_and_budget_state(
    gateway: GatewayThread, upstream: FakeUpstream, config_file: Path
) -> None:
    """A valid file swaps the runtime and keeps the open breaker, the pauses, the budgets."""
    upstream.set_mode("gpt-a", "503")
    upstream.script("gpt-b", "429ra30")
    assert chat(gateway).headers["x-fusebox-served-by"] == "@static"
    old: Runtime = gateway.app.state.runtime
    assert old.deployments["fake/gpt-a"].breaker.state is BreakerState.OPEN
    assert old.pauses.paused_for("fake2/gpt-b") > 0
    config_file.write_text(
        config_text(upstream.url, CHAT + EXTRA, defaults=SMALL_BREAKER)
    )

    answer = reload(gateway)

    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["status"] == "reloaded"
    assert "fake/gpt-a" in doc["carried"]["breakers"]
    assert doc["carried"]["pauses"] == 1
    new: Runtime = gateway.app.state.runtime
    assert new is not old
    assert (
        new.deployments["fake/gpt-a"].breaker is old.deployments["fake/gpt-a"].breaker
    )
    assert new.deployments["fake/gpt-a"].breaker.state is BreakerState.OPEN
    assert new.pauses is old.pauses
    assert new.resources["fake"].budget is old.resources["fake"].budget
    assert new.metrics is old.metrics
    models = httpx.get(gateway.url + "/v1/models", headers=AUTH, timeout=10).json()
    assert {m["id"] for m in models["data"]} == {"chat", "extra"}
    again = chat(gateway)
    assert "fake/gpt-a=open" in again.headers["x-fusebox-attempts"]
    assert "fake2/gpt-b=paused" in again.headers["x-fusebox-attempts"]


def test_an_invalid_file_is_rejected_and_the_old_config_keeps_serving(
    gateway: GatewayThread, config_file: Path
) -> None:
    """A file with errors answers 400 with every problem; the running config stays."""
    before = gateway.app.state.runtime
    config_file.write_text('[models.chat]\nchain = ["nowhere/gpt-x"]\nbogus = 1\n')

    answer = reload(gateway)

    assert answer.status_code == 400
    doc = answer.json()
    assert doc["status"] == "rejected"
    assert doc["config"] == str(config_file)
    assert any("bogus" in p for p in doc["problems"]), doc
    assert gateway.app.state.runtime is before
    assert chat(gateway).headers["x-fusebox-served-by"] == "fake/gpt-a"
    config_file.write_text("this is [ not toml")
    assert reload(gateway).status_code == 400
    config_file.unlink()
    assert "cannot read" in reload(gateway).json()["problems"][0]
    assert gateway.app.state.runtime is before


def test_a_file_naming_an_unset_key_variable_is_refused(
    gateway: GatewayThread, upstream: FakeUpstream, config_file: Path
) -> None:
    """A reload refuses, as ``serve`` does, a config whose ``api_key_env`` is unset."""
    text = config_text(upstream.url, CHAT).replace('"FAKE_KEY"', '"FUSEBOX_UNSET_KEY"')
    config_file.write_text(text)

    answer = reload(gateway)

    assert answer.status_code == 400
    assert "FUSEBOX_UNSET_KEY" in answer.json()["problems"][0]


class Streamer(threading.Thread):
    """Reads one chat stream in the background, keeping its non-empty lines."""

    def __init__(self, gw: GatewayThread) -> None:
        super().__init__()
        self.gw = gw
        self.lines: list[str] = []
        self.first = threading.Event()

    def run(self) -> None:
        body = {
            "model": "chat",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
        url = self.gw.url + "/v1/chat/completions"
        with httpx.stream("POST", url, json=body, headers=AUTH, timeout=10) as resp:
            self.lines.append(resp.headers["x-fusebox-served-by"])
            for line in resp.iter_lines():
                if line:
                    self.lines.append(line)
                    self.first.set()


def _wait_retired(reloader: Reloader) -> None:
    for _ in range(200):
        if reloader.retiring == 0:
            return
        threading.Event().wait(0.01)


def test_a_stream_in_flight_finishes_on_the_config_it_started_with(
    gateway: GatewayThread, upstream: FakeUpstream, config_file: Path
) -> None:
    """A stream started before a reload ends whole on the old chain; then the old pools close."""
    upstream.set_mode("gpt-a", "gap50~words20")
    reloader: Reloader = gateway.app.state.reloader
    old: Runtime = gateway.app.state.runtime
    reader = Streamer(gateway)
    reader.start()
    assert reader.first.wait(5)
    config_file.write_text(
        config_text(upstream.url, CHAT.replace('"fake/gpt-a", ', ""))
    )

    assert reload(gateway).status_code == 200
    assert old.in_flight.count == 1
    assert reloader.retiring == 1
    assert chat(gateway).headers["x-fusebox-served-by"] == "fake2/gpt-b"
    reader.join(10)

    assert reader.lines[0] == "fake/gpt-a"
    assert reader.lines[-1] == "data: [DONE]"
    assert not any('"error"' in line for line in reader.lines)
    _wait_retired(reloader)
    assert reloader.retiring == 0
    assert old.in_flight.count == 0


def test_the_admin_key_guards_reload(upstream: FakeUpstream, config_file: Path) -> None:
    """With ``admin.key_env`` set, a reload needs the bearer key."""
    text = config_text(upstream.url, '[admin]\nkey_env = "ADMIN"\n' + CHAT)
    config_file.write_text(text)
    with running_gateway(text, {**ENV, "ADMIN": "sk-admin"}) as gw:
        denied = reload(gw)
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"].startswith("Bearer")
        assert reload(gw, Authorization="Bearer sk-admin").status_code == 200


def _runtimes(
    upstream: FakeUpstream, before: str, after: str
) -> tuple[Runtime, Runtime]:
    old = Runtime(parse_config(config_text(upstream.url, before)), environ=ENV)
    new = Runtime(parse_config(config_text(upstream.url, after)), environ=ENV)
    return old, new


def _close(*runtimes: Runtime) -> None:
    async def close() -> None:
        for runtime in runtimes:
            await runtime.aclose()

    asyncio.run(close())


def test_changed_settings_start_fresh_and_removed_deployments_are_listed(
    upstream: FakeUpstream,
) -> None:
    """Only state whose settings are unchanged is carried; the rest starts fresh."""
    before = CHAT
    after = CHAT.replace('"fake2/gpt-b", ', "") + (
        "[providers.fake.breaker]\nopen_s = 99\n"
        "[providers.fake2.retry]\nbudget_ratio = 0.5\n"
        "[providers.claude.bulkhead]\nmax_concurrent = 3\n"
    )
    old, new = _runtimes(upstream, before, after)
    old.deployments["fake/gpt-a"].breaker.force(
        BreakerState.OPEN, until_wall=None, reason="test"
    )
    old.draining = True
    try:
        carried = carry_state(old, new)
    finally:
        _close(old, new)
    assert carried.breakers == []
    assert carried.reset_breakers == ["fake/gpt-a"]
    assert carried.removed == ["fake2/gpt-b"]
    assert new.deployments["fake/gpt-a"].breaker.state is BreakerState.CLOSED
    assert carried.retry_budgets == ["fake", "claude"]
    assert carried.bulkheads == ["fake", "fake2"]
    assert new.deployments["fake/gpt-a"].bulkhead is old.resources["fake"].bulkhead
    assert carried.tenant_limiters == ["acme", "globex"]
    assert new.draining


def test_a_carried_breaker_reports_to_the_new_runtime(upstream: FakeUpstream) -> None:
    """A kept breaker's transitions reach the new runtime's metrics and log."""
    old, new = _runtimes(upstream, CHAT, CHAT)
    try:
        carry_state(old, new)
        old.metrics, new.metrics = Metrics(), Metrics()
        breaker = new.deployments["fake/gpt-a"].breaker
        assert breaker is old.deployments["fake/gpt-a"].breaker
        breaker.force(BreakerState.OPEN, until_wall=None, reason="test", notify=True)
    finally:
        _close(old, new)
    opened = 'deployment="fake/gpt-a",from_state="closed",to_state="open"} 1.0'
    assert opened in new.metrics.expose().decode()
    assert opened not in old.metrics.expose().decode()
