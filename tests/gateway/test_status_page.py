"""The live status page in real headless Chromium: an open breaker is shown with its reason.

Chromium comes from Debian's ``chromium`` package (``.ci/run`` installs it); the
test installs nothing itself and skips only where no Chromium binary exists. The
screenshot is kept as an artefact under ``tests/artifacts/``.
"""

from __future__ import annotations

import html
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.fakes.clock import FakeClock
from tests.harness import DEMO_KEY, GatewayThread, config_text, running_gateway

if TYPE_CHECKING:
    from gateway.fakeupstream import FakeUpstream

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None
)
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHAIN = """
[providers.fake.retry]
attempts = 1

[providers.fake.breaker]
min_calls = 3
failure_rate = 0.5
open_s = 10

[providers.fake2.retry]
attempts = 1

[models.chat]
chain = ["fake/gpt-a", "fake2/gpt-b"]

[models.backup]
chain = ["claude/claude-h"]
"""
#: Chromium gets this long, then the test fails rather than hangs.
CHROMIUM_TIMEOUT_S = 60

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium binary: apt-get install chromium"
)


def chat(gw: GatewayThread) -> httpx.Response:
    """POST one chat completion as tenant acme."""
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {DEMO_KEY}"},
        timeout=10,
    )


def chromium(url: str, profile: Path, *extra: str) -> str:
    """Load ``url`` in headless Chromium, let its scripts run, return the DOM."""
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            *extra,
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=CHROMIUM_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def reopen_and_pause(
    gw: GatewayThread, upstream: FakeUpstream, clock: FakeClock
) -> str:
    """Open gpt-a's breaker, fail its probe, pause gpt-b; return gpt-a's reason."""
    upstream.set_mode("gpt-a", "503")
    for _ in range(4):
        chat(gw)
    clock.advance(10)
    upstream.script("gpt-b", "429ra45")
    chat(gw)  # the probe fails (re-open for 20 s); gpt-b answers 429: paused
    reason: str = gw.runtime.deployments["fake/gpt-a"].breaker.reason
    return reason


@pytest.mark.timeout(CHROMIUM_TIMEOUT_S * 2)
def test_the_page_shows_an_open_breaker_with_its_reason_in_chromium(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """A breaker re-opened after a failed probe shows as open, with its reason and history."""
    clock = FakeClock()
    text = config_text(upstream.url, CHAIN)
    with running_gateway(text, {"FAKE_KEY": "k"}, clock) as gw:
        reason = reopen_and_pause(gw, upstream, clock)
        shot = ARTIFACTS / "status_page.png"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        dom = chromium(
            gw.url + "/fusebox/",
            tmp_path / "profile",
            f"--screenshot={shot}",
            "--window-size=1280,800",
        )
    assert reason.startswith("probe failed")
    row = dom[dom.index('data-deployment="fake/gpt-a"') :]
    row = row[: row.index("</tr>")]
    assert '<span class="state open">open</span>' in row
    assert html.escape(reason, quote=False) in row
    assert "closed → open" in row  # the history
    assert "failure rate 100%" in row  # the first opening's reason, in the history
    paused = dom[dom.index('data-deployment="fake2/gpt-b"') :]
    assert 'class="paused"' in paused[: paused.index("</tr>")]
    assert 'data-deployment="claude/claude-h"' in dom
    assert shot.stat().st_size > 10_000


@pytest.mark.timeout(CHROMIUM_TIMEOUT_S * 2)
def test_the_page_takes_the_admin_key_from_the_query_and_keeps_it_out_of_the_url(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """With an admin key set, ``?key=`` lets the page's fetch through; a wrong key shows why not."""
    body = CHAIN + '\n[admin]\nkey_env = "FBX_ADMIN"\n'
    env = {"FAKE_KEY": "k", "FBX_ADMIN": "fbx-admin-page-key"}
    with running_gateway(config_text(upstream.url, body), env) as gw:
        good = chromium(gw.url + "/fusebox/?key=fbx-admin-page-key", tmp_path / "a")
        bad = chromium(gw.url + "/fusebox/?key=wrong", tmp_path / "b")
    assert 'data-deployment="fake/gpt-a"' in good
    assert "fbx-admin-page-key" not in good
    assert 'data-deployment="fake/gpt-a"' not in bad
    assert "needs the admin key" in bad
