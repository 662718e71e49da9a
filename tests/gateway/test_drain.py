"""Graceful drain and SIGHUP reload of a real ``fusebox serve`` process on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from litestar import Litestar

from gateway.config import parse_config
from gateway.lifecycle import process_lifespan
from gateway.reload import Reloader
from gateway.runtime import Runtime
from tests.harness import DEMO_KEY, config_text

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from gateway.fakeupstream import FakeUpstream

AUTH = {"Authorization": f"Bearer {DEMO_KEY}"}
CHAT = """
[models.chat]
chain = ["fake/gpt-slow"]
"""
STREAM = {
    "model": "chat",
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Served:
    """A ``fusebox serve`` subprocess and where it listens."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def output(self) -> str:
        """Return what the process printed so far."""
        return self.log.read_text(errors="replace")


def _server_text(
    upstream: FakeUpstream, tmp_path: Path, drain_s: float, body: str
) -> str:
    server = f'[server]\ndrain_s = {drain_s}\n[store]\npath = "{tmp_path / "store"}"\n'
    return config_text(upstream.url, server + body)


@contextlib.contextmanager
def serving(tmp_path: Path, text: str) -> Iterator[Served]:
    """Run ``fusebox serve`` on a free loopback port until it is healthy."""
    config = tmp_path / "fusebox.toml"
    config.write_text(text)
    port = _free_port()
    log = tmp_path / "serve.log"
    args = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*args, "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "FAKE_KEY": "k"},
            cwd=tmp_path,
        )
    served = Served(proc, port, log)
    try:
        _wait_healthy(served)
        yield served
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _wait_healthy(served: Served) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if served.proc.poll() is not None:
            break
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(served.url + "/healthz", timeout=1).status_code == 200:
                return
        threading.Event().wait(0.05)
    raise AssertionError(f"fusebox serve did not become healthy:\n{served.output()}")


def _refused(port: int, within_s: float) -> bool:
    """Return whether a new connection is refused within ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except ConnectionRefusedError:
            return True
        threading.Event().wait(0.02)
    return False


def _stream_with_sigterm(served: Served) -> tuple[list[str], bool, float]:
    """Start a stream, SIGTERM the server after its first chunk, read it to the end."""
    lines: list[str] = []
    url = served.url + "/v1/chat/completions"
    with (
        httpx.Client(timeout=20) as client,
        client.stream("POST", url, json=STREAM, headers=AUTH) as resp,
    ):
        chunks = (line for line in resp.iter_lines() if line)
        lines.append(next(chunks))
        sent = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        refused = _refused(served.port, within_s=1.5)
        with contextlib.suppress(httpx.TransportError):
            lines.extend(chunks)
    return lines, refused, sent


@pytest.mark.timeout(60)
def test_sigterm_lets_a_stream_finish_then_exits_zero(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """SIGTERM mid-stream: new connections are refused, the stream ends whole, exit 0."""
    upstream.set_mode("gpt-slow", "gap100~words20")
    text = _server_text(upstream, tmp_path, drain_s=10, body=CHAT)
    with serving(tmp_path, text) as served:
        lines, refused, sent = _stream_with_sigterm(served)
        code = served.proc.wait(15)
        took = time.monotonic() - sent

    assert refused, "a new connection was accepted after SIGTERM"
    assert lines[-1] == "data: [DONE]", served.output()
    words = "".join(_content(line) for line in lines[:-1]).split()
    assert len(words) == 20
    assert code == 0, served.output()
    assert took < 8
    assert "drain_started" in served.output()


@pytest.mark.timeout(60)
def test_a_stream_longer_than_drain_s_is_cut_and_the_exit_is_still_clean(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """After ``server.drain_s`` the server stops waiting, closes its pools and exits 0."""
    upstream.set_mode("gpt-slow", "gap300~words40")
    text = _server_text(upstream, tmp_path, drain_s=1, body=CHAT)
    with serving(tmp_path, text) as served:
        lines, _, sent = _stream_with_sigterm(served)
        code = served.proc.wait(15)
        took = time.monotonic() - sent

    assert "data: [DONE]" not in lines
    assert code == 0, served.output()
    assert took < 6


@pytest.mark.timeout(60)
def test_sighup_reloads_the_config_and_a_bad_file_changes_nothing(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """SIGHUP re-reads the file: a valid one adds an alias, an invalid one is logged and ignored."""
    upstream.set_mode("gpt-slow", None)
    text = _server_text(upstream, tmp_path, drain_s=5, body=CHAT)
    extra = '[models.extra]\nchain = ["fake2/gpt-b"]\n'
    with serving(tmp_path, text) as served:
        (tmp_path / "fusebox.toml").write_text(text + extra)
        served.proc.send_signal(signal.SIGHUP)
        assert _wait_for_alias(served, "extra"), served.output()
        (tmp_path / "fusebox.toml").write_text("[models.extra\n")
        served.proc.send_signal(signal.SIGHUP)
        assert _wait_for_log(served, "ok=False"), served.output()
        assert _aliases(served) == {"chat", "extra"}
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(15) == 0


def _aliases(served: Served) -> set[str]:
    models = httpx.get(served.url + "/v1/models", headers=AUTH, timeout=5).json()
    return {m["id"] for m in models["data"]}


def _wait_for_alias(served: Served, alias: str) -> bool:
    for _ in range(100):
        if alias in _aliases(served):
            return True
        threading.Event().wait(0.05)
    return False


def _wait_for_log(served: Served, needle: str) -> bool:
    for _ in range(100):
        if needle in served.output():
            return True
        threading.Event().wait(0.05)
    return False


def _content(line: str) -> str:
    import json  # noqa: PLC0415

    assert line.startswith("data: "), line
    chunk: dict[str, Any] = json.loads(line.removeprefix("data: "))
    choices = chunk.get("choices") or [{}]
    return str(choices[0].get("delta", {}).get("content") or "")


def test_the_lifespan_marks_draining_and_chains_the_servers_handler(
    upstream: FakeUpstream,
) -> None:
    """In the main thread the lifespan sets ``draining`` on SIGTERM, then calls the old handler."""
    seen: list[int] = []
    config = parse_config(config_text(upstream.url, CHAT))
    app = Litestar(route_handlers=[])
    app.state.runtime = Runtime(config, environ={"FAKE_KEY": "k"})
    app.state.reloader = Reloader()
    original = signal.signal(signal.SIGTERM, lambda signum, _frame: seen.append(signum))
    try:

        async def scenario() -> None:
            async with process_lifespan(app):
                signal.raise_signal(signal.SIGTERM)
                await asyncio.sleep(0)
            await app.state.runtime.aclose()

        asyncio.run(scenario())
        assert app.state.runtime.draining
        assert seen == [signal.SIGTERM]
        signal.raise_signal(signal.SIGTERM)  # the lifespan put the old handler back
        assert seen == [signal.SIGTERM, signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, original)
