"""``fusebox demo --fast``: the chaos tour runs by itself and tells the whole story."""

from __future__ import annotations

import pytest

from gateway.cli import main


@pytest.mark.timeout(60)
def test_the_fast_tour_narrates_outage_fallback_and_recovery(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The fast tour opens the breaker, serves by fallback and @static, recovers, exits 0."""
    code = main(["demo", "--fast"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert "/fusebox/" in out
    assert "OUTAGE" in out
    assert "BREAKER OPEN on fake/gpt-primary" in out
    assert "PROBE" in out
    assert "served by fake2/gpt-backup  [degraded: fallback" in out
    assert "served by @static" in out
    assert "BREAKER CLOSED on fake/gpt-primary: probe succeeded" in out
    assert "RECOVERED" in out
    assert "The tour is over" in out
