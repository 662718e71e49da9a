"""Circuit breakers: one per deployment, so a broken model is skipped at once.

The breaker sits inside the retry layer and outside the bulkhead: every
attempt passes ``acquire()`` (an open circuit raises ``CircuitOpenError``,
ending the retries, and fallback moves on without taking a bulkhead slot) and
ends in ``record()`` (a verdict) or ``release()`` (no verdict). It is a pure
state machine: time comes from the clock, it never awaits and holds no lock,
and OPEN turns HALF_OPEN lazily, on the first ``acquire()`` after the open
period, with no timer.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import TYPE_CHECKING, Final, final

import msgspec

from policies.window import FIELD_BITS, MASK, RollingCounts, count, pack
from providers.errors import CircuitOpenError

if TYPE_CHECKING:
    from collections.abc import Callable

    from policies.clock import Clock
    from policies.config import BreakerConfig

_CALLS: Final = 0
_FAILURES: Final = 1
_SLOW: Final = 2
_FAILURES_SHIFT: Final = _FAILURES * FIELD_BITS
#: The slow count is the top field: it needs a shift and no mask.
_SLOW_SHIFT: Final = _SLOW * FIELD_BITS
#: Packed window counts of one call, indexed ``[failed][slow]``.
_OUTCOMES: Final = (
    (pack(1, 0, 0), pack(1, 0, 1)),
    (pack(1, 1, 0), pack(1, 1, 1)),
)
_HISTORY: Final = 10
#: Never tell a client to come back in 0 s: the header would invite a hot loop.
_MIN_RETRY_AFTER_S: Final = 0.05
#: Suggested wait while the half-open probes are out (they end within seconds).
_PROBES_BUSY_RETRY_AFTER_S: Final = 1.0


class BreakerState(enum.Enum):
    """Where a deployment's breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# Module constants: comparing against them skips the Enum class attribute lookup.
_CLOSED: Final = BreakerState.CLOSED
_OPEN: Final = BreakerState.OPEN
_HALF_OPEN: Final = BreakerState.HALF_OPEN


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """One state change, for logs, metrics, the status page and other replicas."""

    deployment: str
    from_state: BreakerState
    to_state: BreakerState
    #: Human text, e.g. "failure rate 60% over 5 calls in 30s ≥ 50%".
    reason: str
    at_wall: float
    #: When an OPEN breaker will let a probe through; None for other states.
    retry_at_wall: float | None = None
    #: Learned from another replica through ``Breaker.force``.
    is_remote: bool = False


@final
class Permit:
    """Leave to make one call; hand it back to ``record`` or ``release``.

    Permits are shared per state generation (no allocation per call), so a
    permit from before a transition is recognised as stale and ignored.
    """

    __slots__ = ("generation", "is_probe")

    def __init__(self, generation: int, *, is_probe: bool) -> None:
        """Create the permit of one state generation."""
        self.generation = generation
        self.is_probe = is_probe


class Breaker:
    """A count-and-time breaker over a rolling window, with half-open probes.

    CLOSED opens when the window holds at least ``min_calls`` calls and the
    failure share reaches ``failure_rate`` or the slow share ``slow_rate``.
    OPEN refuses calls for the open period (``open_s``, doubled on each
    consecutive re-open up to ``max_open_s``), then lets ``half_open_probes``
    trial calls through: one success closes it, a failed or slow probe opens
    it again.
    """

    __slots__ = (
        "_clock",
        "_config",
        "_generation",
        "_history",
        "_max_open_s",
        "_on_transition",
        "_open_s",
        "_open_until",
        "_permit",
        "_probes_out",
        "_reason",
        "_retry_at_wall",
        "_since_wall",
        "_state",
        "_window",
        "name",
    )

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        clock: Clock,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        """Create a closed breaker.

        Args:
            name: The deployment (``provider/model``) it guards.
            config: Its thresholds and periods.
            clock: The injected clock.
            on_transition: Called after each local state change (logs,
                metrics, replication); it must not raise.
        """
        self.name = name
        self._config = config
        self._clock = clock
        self._on_transition = on_transition
        self._state = _CLOSED
        self._generation = 0
        self._permit = Permit(0, is_probe=False)
        self._probes_out = 0
        self._open_until = 0.0
        self._open_s = config.open_s
        self._max_open_s = max(config.max_open_s, config.open_s)
        self._reason = "no verdict yet"
        self._since_wall = clock.wall()
        self._retry_at_wall: float | None = None
        self._window = RollingCounts(config.window_s, clock.monotonic())
        self._history: deque[Transition] = deque(maxlen=_HISTORY)

    def acquire(self) -> Permit:
        """Return a permit for one call.

        Raises:
            CircuitOpenError: The breaker is open, or half-open with every
                probe already out; ``retry_after_s`` says when to come back.
        """
        if self._state is _CLOSED:
            return self._permit
        return self._acquire_not_closed()

    def record(self, permit: Permit, *, failed: bool, duration_s: float) -> None:
        """Report how a permitted call went.

        Args:
            permit: What ``acquire`` returned for this call.
            failed: The call failed in a way that counts against the deployment.
            duration_s: How long it took; over ``slow_s`` it counts as slow.
        """
        if permit.generation != self._generation:
            # From before a transition: its verdict is about a state gone by.
            return
        slow = duration_s > self._config.slow_s
        if permit.is_probe:
            self._probes_out -= 1
            self._settle_probe(failed=failed, slow=slow, duration_s=duration_s)
        else:
            self._count(failed=failed, slow=slow)

    def release(self, permit: Permit) -> None:
        """Hand back a permit whose call ended without a verdict.

        Use it for client errors, cancellations, a full bulkhead or a context
        length error: nothing is counted and a half-open probe slot is freed.
        """
        if permit.is_probe and permit.generation == self._generation:
            self._probes_out -= 1

    def force(
        self,
        state: BreakerState,
        *,
        until_wall: float | None,
        reason: str,
        notify: bool = False,
    ) -> None:
        """Adopt a state learned from another replica.

        ``on_transition`` is not called unless ``notify`` is set, and then with
        ``is_remote=True``, so a replicated transition never echoes back.

        Args:
            state: The state to adopt.
            until_wall: For OPEN, the unix time the open period ends (None:
                this breaker's current open period from now); otherwise unused.
            reason: Human text for the status page.
            notify: Call ``on_transition`` for the change.
        """
        now = self._clock.monotonic()
        if state is _OPEN:
            self._force_open(now, until_wall, reason, notify=notify)
        elif state is not self._state:
            transition = self._move(state, reason, now, is_remote=True)
            if notify:
                self._emit(transition)

    @property
    def state(self) -> BreakerState:
        """The current state (an OPEN past its period shows OPEN until asked)."""
        return self._state

    @property
    def reason(self) -> str:
        """Why the breaker is in its state."""
        return self._reason

    @property
    def since_wall(self) -> float:
        """Unix time of the last transition (or of creation)."""
        return self._since_wall

    @property
    def retry_at_wall(self) -> float | None:
        """Unix time an OPEN breaker will let a probe through; None otherwise."""
        return self._retry_at_wall

    @property
    def probes_out(self) -> int:
        """Half-open probes let through and not yet settled."""
        return self._probes_out

    @property
    def calls(self) -> int:
        """Calls counted in the current window."""
        return self._totals()[0]

    @property
    def failure_rate(self) -> float:
        """Share of failed calls in the current window (0 when empty)."""
        calls, failures, _ = self._totals()
        return failures / calls if calls else 0.0

    @property
    def slow_rate(self) -> float:
        """Share of slow calls in the current window (0 when empty)."""
        calls, _, slow = self._totals()
        return slow / calls if calls else 0.0

    @property
    def open_s_current(self) -> float:
        """The open period the next (re-)open would use."""
        return self._open_s

    @property
    def history(self) -> deque[Transition]:
        """The last few transitions, oldest first."""
        return self._history

    @property
    def on_transition(self) -> Callable[[Transition], None] | None:
        """What is called after each local state change (a reload rebinds it)."""
        return self._on_transition

    @on_transition.setter
    def on_transition(self, callback: Callable[[Transition], None] | None) -> None:
        self._on_transition = callback

    def _acquire_not_closed(self) -> Permit:
        if self._state is _OPEN:
            now = self._clock.monotonic()
            left = self._open_until - now
            if left > 0:
                raise CircuitOpenError(
                    f"circuit open for {self.name}: {self._reason}; "
                    f"next probe in {left:.1f}s",
                    retry_after_s=max(left, _MIN_RETRY_AFTER_S),
                )
            self._emit(self._move(_HALF_OPEN, "open period over: probing", now))
        if self._probes_out >= self._config.half_open_probes:
            raise CircuitOpenError(
                f"circuit half-open for {self.name}: "
                f"{self._probes_out} probe(s) already in flight",
                retry_after_s=_PROBES_BUSY_RETRY_AFTER_S,
            )
        self._probes_out += 1
        return self._permit

    def _count(self, *, failed: bool, slow: bool) -> None:
        now = self._clock.monotonic()
        window = self._window
        window.add(now, _OUTCOMES[failed][slow])
        total = window.total
        calls = total & MASK
        config = self._config
        if calls < config.min_calls:
            return
        failures = (total >> _FAILURES_SHIFT) & MASK
        slow_calls = total >> _SLOW_SHIFT
        if (
            failures / calls >= config.failure_rate
            or slow_calls / calls >= config.slow_rate
        ):
            self._trip(now, calls, failures, slow_calls)

    def _trip(self, now: float, calls: int, failures: int, slow_calls: int) -> None:
        config = self._config
        if failures / calls >= config.failure_rate:
            what = f"failure rate {failures / calls:.0%}"
            threshold = config.failure_rate
        else:
            what = (
                f"slow rate {slow_calls / calls:.0%} (slower than {config.slow_s:g}s)"
            )
            threshold = config.slow_rate
        why = f"{what} over {calls} calls in {config.window_s:g}s ≥ {threshold:.0%}"
        self._emit(self._move(_OPEN, why, now))

    def _settle_probe(self, *, failed: bool, slow: bool, duration_s: float) -> None:
        now = self._clock.monotonic()
        if not failed and not slow:
            self._emit(self._move(_CLOSED, "probe succeeded", now))
            return
        self._open_s = min(self._open_s * 2, self._max_open_s)
        why = (
            "probe failed"
            if failed
            else f"probe slow ({duration_s:.1f}s > {self._config.slow_s:g}s)"
        )
        reason = f"{why}: re-open for {self._open_s:g}s"
        self._emit(self._move(_OPEN, reason, now))

    def _force_open(
        self, now: float, until_wall: float | None, reason: str, *, notify: bool
    ) -> None:
        wall = self._clock.wall()
        open_for = self._open_s if until_wall is None else max(until_wall - wall, 0.0)
        if self._state is _OPEN:
            # Already open here: only ever lengthen the open period.
            if now + open_for > self._open_until:
                self._open_until = now + open_for
                self._retry_at_wall = wall + open_for
                self._reason = reason
            return
        self._open_s = min(max(open_for, self._config.open_s), self._max_open_s)
        transition = self._move(_OPEN, reason, now, open_for=open_for, is_remote=True)
        if notify:
            self._emit(transition)

    def _move(
        self,
        to: BreakerState,
        reason: str,
        now: float,
        *,
        open_for: float | None = None,
        is_remote: bool = False,
    ) -> Transition:
        """Change state; every transition starts a new permit generation."""
        from_state = self._state
        self._state = to
        self._generation += 1
        self._permit = Permit(self._generation, is_probe=to is _HALF_OPEN)
        self._probes_out = 0
        self._reason = reason
        wall = self._clock.wall()
        self._since_wall = wall
        if to is _OPEN:
            period = self._open_s if open_for is None else open_for
            self._open_until = now + period
            self._retry_at_wall = wall + period
        else:
            self._retry_at_wall = None
        if to is _CLOSED:
            self._window.clear()
            self._open_s = self._config.open_s
        transition = Transition(
            deployment=self.name,
            from_state=from_state,
            to_state=to,
            reason=reason,
            at_wall=wall,
            retry_at_wall=self._retry_at_wall,
            is_remote=is_remote,
        )
        self._history.append(transition)
        return transition

    def _emit(self, transition: Transition) -> None:
        if self._on_transition is not None:
            self._on_transition(transition)

    def _totals(self) -> tuple[int, int, int]:
        self._window.roll(self._clock.monotonic())
        total = self._window.total
        return count(total, _CALLS), count(total, _FAILURES), count(total, _SLOW)
