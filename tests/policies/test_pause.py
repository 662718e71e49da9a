"""The 429 pause board: paused deployments are skipped until their reset time."""

from __future__ import annotations

import pytest

from policies.pause import Pause, PauseBoard
from providers.errors import DeploymentPausedError
from tests.fakes.clock import WALL_OFFSET, FakeClock

DEP = "openai/gpt-5-mini"


def test_a_pause_counts_down_and_expires(clock: FakeClock) -> None:
    """A paused deployment reports the seconds left and is usable again after them."""
    board = PauseBoard(clock)
    board.pause(DEP, 20, "429, Retry-After 20s")
    clock.advance(5)
    assert board.paused_for(DEP) == 15
    assert board.until_wall(DEP) == clock.now + 15 + WALL_OFFSET
    clock.advance(15)
    assert board.paused_for(DEP) == 0
    assert board.until_wall(DEP) is None
    assert board.snapshot() == {}


def test_a_pause_is_extended_never_shortened(clock: FakeClock) -> None:
    """A later, shorter 429 does not cut short the wait an earlier one asked for."""
    board = PauseBoard(clock)
    board.pause(DEP, 30, "long")
    board.pause(DEP, 5, "short")
    assert board.paused_for(DEP) == 30
    board.pause(DEP, 60, "longer")
    assert board.paused_for(DEP) == 60
    assert board.snapshot()[DEP].reason == "longer"


def test_a_zero_pause_does_nothing(clock: FakeClock) -> None:
    """A 429 with a zero wait does not take the deployment out of service."""
    board = PauseBoard(clock)
    board.pause(DEP, 0, "none")
    assert board.paused_for(DEP) == 0
    board.check(DEP)


def test_check_refuses_a_paused_deployment(clock: FakeClock) -> None:
    """A request to a paused deployment is refused at once with the time left."""
    board = PauseBoard(clock)
    board.pause(DEP, 12, "429 from upstream")
    with pytest.raises(DeploymentPausedError, match="429 from upstream") as info:
        board.check(DEP)
    assert info.value.retry_after_s == 12


def test_snapshot_lists_active_pauses_only(clock: FakeClock) -> None:
    """The status page shows each active pause with its end, and drops expired ones."""
    board = PauseBoard(clock)
    board.pause("a/x", 5, "short")
    board.pause("b/y", 50, "long")
    clock.advance(10)
    assert board.snapshot() == {
        "b/y": Pause("b/y", "long", clock.wall() + 40, 40),
    }
    assert board.paused_for("a/x") == 0
