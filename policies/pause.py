"""The 429 pause board: deployments an upstream asked us to leave alone for a while.

A 429 is not a breaker failure (the deployment works, we are just over its
limit), so the retry layer pauses the deployment until its reset time
instead; while paused, fallback skips it at once with ``DeploymentPausedError``
and the exhausted chain's ``Retry-After`` is the earliest pause end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from providers.errors import DeploymentPausedError

if TYPE_CHECKING:
    from policies.clock import Clock


class Pause(msgspec.Struct, frozen=True):
    """One active pause, for the status page."""

    deployment: str
    reason: str
    until_wall: float
    remaining_s: float


class PauseBoard:
    """Per-deployment pauses, in monotonic time; expired ones vanish on read."""

    __slots__ = ("_clock", "_pauses")

    def __init__(self, clock: Clock) -> None:
        """Create an empty board."""
        self._clock = clock
        self._pauses: dict[str, tuple[float, str]] = {}

    def pause(self, deployment: str, seconds: float, reason: str) -> None:
        """Pause ``deployment`` for ``seconds``; an existing longer pause is kept.

        Args:
            deployment: ``provider/model``.
            seconds: How long to skip it; 0 or less does nothing.
            reason: Human text for the status page (e.g. "429, Retry-After 20s").
        """
        if seconds <= 0:
            return
        until = self._clock.monotonic() + seconds
        current = self._pauses.get(deployment)
        if current is None or until > current[0]:
            self._pauses[deployment] = (until, reason)

    def paused_for(self, deployment: str) -> float:
        """Return the seconds left in ``deployment``'s pause (0 when not paused)."""
        entry = self._pauses.get(deployment)
        if entry is None:
            return 0.0
        left = entry[0] - self._clock.monotonic()
        if left <= 0:
            del self._pauses[deployment]
            return 0.0
        return left

    def check(self, deployment: str) -> None:
        """Raise ``DeploymentPausedError`` if ``deployment`` is paused right now."""
        left = self.paused_for(deployment)
        if left > 0:
            reason = self._pauses[deployment][1]
            raise DeploymentPausedError(
                f"{deployment} is paused for {left:.1f}s more: {reason}",
                retry_after_s=left,
            )

    def until_wall(self, deployment: str) -> float | None:
        """Return the unix time ``deployment``'s pause ends, or None if not paused."""
        left = self.paused_for(deployment)
        return self._clock.wall() + left if left > 0 else None

    def snapshot(self) -> dict[str, Pause]:
        """Return every active pause, dropping the expired ones."""
        now = self._clock.monotonic()
        wall = self._clock.wall()
        active: dict[str, Pause] = {}
        for deployment, (until, reason) in list(self._pauses.items()):
            left = until - now
            if left <= 0:
                del self._pauses[deployment]
            else:
                active[deployment] = Pause(deployment, reason, wall + left, left)
        return active
