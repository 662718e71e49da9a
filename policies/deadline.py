"""The deadline of one whole request: every layer below reads the time left.

Outermost time policy of the onion: ``min(server.deadline_s,
x-fusebox-deadline-s, x-stainless-read-timeout - margin)`` (DESIGN.md §7).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

    from policies.clock import Clock

#: Kept back from the client's own read timeout, so our 504 reaches it first.
CLIENT_MARGIN_S: Final = 0.5
_MIN_S: Final = 0.05


class Deadline:
    """A point in monotonic time after which nothing may start or wait."""

    __slots__ = ("_clock", "at", "budget_s")

    def __init__(self, clock: Clock, budget_s: float) -> None:
        """Start a deadline ``budget_s`` seconds from now."""
        self._clock = clock
        self.budget_s = budget_s
        self.at = clock.monotonic() + budget_s

    def left(self) -> float:
        """Return the seconds left (never negative)."""
        return max(0.0, self.at - self._clock.monotonic())

    @property
    def expired(self) -> bool:
        """Tell whether the time is up."""
        return self._clock.monotonic() >= self.at


def deadline_budget(server_s: float, headers: Mapping[str, str]) -> float:
    """Return the request's budget from the server limit and the client's hints.

    Unparsable or non-positive hints are ignored rather than failing the request.
    """
    budget = server_s
    explicit = _positive(headers.get("x-fusebox-deadline-s"))
    if explicit is not None:
        budget = min(budget, explicit)
    client = _positive(headers.get("x-stainless-read-timeout"))
    if client is not None:
        budget = min(budget, max(_MIN_S, client - CLIENT_MARGIN_S))
    return budget


def _positive(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value > 0 and value == value else None  # noqa: PLR0124 - NaN check
