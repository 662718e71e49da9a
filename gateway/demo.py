"""``fusebox demo``: a narrated chaos tour on loopback, about a minute and a half.

Outside the onion: it starts the fake upstream and a gateway on free loopback
ports with the chain ``fake/gpt-primary → fake2/gpt-backup → @static`` and a
small breaker (``min_calls = 4``, ``window_s = 5``, ``open_s = 5``), sends a
request every 0.3 s and prints what happens as it happens:

1. all is well: the primary answers;
2. the primary goes down (every call 503): its breaker opens, the backup
   serves (``x-fusebox-degraded: fallback``); each open period ends with one
   probe, which fails and re-opens the breaker for twice as long;
3. the backup fails too, for a few seconds: the ``@static`` answer keeps
   clients served, and the backup's own breaker opens and later recovers;
4. the outage is lifted: the next probe succeeds, the breaker closes, the
   primary serves again, and the tour ends by itself.

``--fast`` plays the same script in about ten seconds (the tests use it).
The status page (``/fusebox/``) shows the same story while the tour runs.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import IO, TYPE_CHECKING, Final, NamedTuple

from gateway.app import create_app
from gateway.config import parse_config
from gateway.demorig import (
    BACKUP,
    PRIMARY,
    Client,
    GatewayThread,
    Outcome,
    Pace,
    demo_config,
)
from gateway.fakeupstream import FakeUpstream

if TYPE_CHECKING:
    from collections.abc import Callable

    from policies.breaker import Transition

#: While nothing changes, say so every this many requests.
_HEARTBEAT: Final = 10

NORMAL: Final = Pace(0.3, 10.0, 45.0, 18.0, 3.0, 5.0, 5.0, 10.0, 3.0)
FAST: Final = Pace(0.1, 1.0, 4.0, 1.5, 0.5, 1.0, 0.6, 1.2, 0.5)


class Step(NamedTuple):
    """One scripted change, ``at_s`` seconds into the tour."""

    at_s: float
    headline: str
    act: Callable[[], None]


def script(upstream: FakeUpstream, pace: Pace) -> list[Step]:
    """Return the tour's scenes in order."""
    outage = pace.healthy_s
    backup_down = outage + pace.backup_down_at_s
    return [
        Step(0.0, "Scene 1: all is well. The primary answers every request.", _noop),
        Step(
            outage,
            f"Scene 2: OUTAGE. {PRIMARY} now answers 503 to everything.",
            lambda: upstream.set_mode("gpt-primary", "503"),
        ),
        Step(
            backup_down,
            f"Scene 3: {BACKUP} fails too. Only @static is left.",
            lambda: upstream.set_mode("gpt-backup", "503"),
        ),
        Step(
            backup_down + pace.backup_down_s,
            f"{BACKUP} is healthy again.",
            lambda: upstream.set_mode("gpt-backup", None),
        ),
        Step(
            outage + pace.outage_s,
            f"Scene 4: the outage is over. {PRIMARY} answers again; the next probe"
            " will find out.",
            lambda: upstream.set_mode("gpt-primary", None),
        ),
    ]


def _noop() -> None:
    """Scene 1 changes nothing."""


class Tour:
    """Drives the traffic, plays the script and narrates what the gateway does."""

    def __init__(
        self, gateway: GatewayThread, steps: list[Step], pace: Pace, out: IO[str]
    ) -> None:
        """Prepare a tour against a started gateway."""
        self.gateway = gateway
        self.client = Client(gateway.port)
        self.steps = steps
        self.pace = pace
        self.out = out
        self.started = time.monotonic()
        self.seen: dict[str, Transition | None] = {}
        self.served: Counter[str] = Counter()
        self.last: Outcome | None = None
        self.repeats = 0
        self.recovered_at: float | None = None

    def say(self, text: str) -> None:
        """Print one line, stamped with the seconds since the tour began."""
        print(
            f"[{time.monotonic() - self.started:6.1f}s] {text}",
            file=self.out,
            flush=True,
        )

    def run(self) -> bool:
        """Play the whole tour; return whether the primary recovered."""
        pending = list(self.steps)
        give_up = self.steps[-1].at_s + self.pace.max_open_s + 5 * self.pace.interval_s
        tick = threading.Event()
        n = 0
        while True:
            elapsed = time.monotonic() - self.started
            while pending and pending[0].at_s <= elapsed:
                self._play(pending.pop(0))
            n += 1
            outcome = self._request(n)
            self._watch_breakers()
            if self.recovered_at is None and outcome.served_by == PRIMARY:
                self._check_recovery()
            if not pending and self._finished(elapsed, give_up):
                break
            tick.wait(self.pace.interval_s)
        self.client.close()
        return self.recovered_at is not None

    def _finished(self, elapsed: float, give_up: float) -> bool:
        if self.recovered_at is not None:
            return time.monotonic() - self.recovered_at >= self.pace.tail_s
        return elapsed >= give_up

    def _play(self, step: Step) -> None:
        print(file=self.out)
        self.say(f"=== {step.headline}")
        step.act()

    def _request(self, n: int) -> Outcome:
        outcome = self.client.send()
        self.served[outcome.served_by] += 1
        if outcome == self.last:
            self.repeats += 1
            if self.repeats % _HEARTBEAT == 0:
                self.say(f"    ... the same for {self.repeats + 1} requests in a row")
            return outcome
        self.last, self.repeats = outcome, 0
        self.say(f"#{n} {describe(outcome)}")
        return outcome

    def _check_recovery(self) -> None:
        if self.served[BACKUP] and self.gateway.breakers()[PRIMARY][0] == "closed":
            self.recovered_at = time.monotonic()
            self.say(f"RECOVERED: {PRIMARY} serves again; clients never saw an error.")

    def _watch_breakers(self) -> None:
        for name, (_, history) in self.gateway.breakers().items():
            last = self.seen.get(name)
            fresh = history[history.index(last) + 1 :] if last in history else history
            for transition in fresh:
                self.say(narrate(transition))
            if history:
                self.seen[name] = history[-1]

    def summary(self) -> None:
        """Print who served how many requests."""
        print(file=self.out)
        self.say("=== The tour is over. Requests served by each rung:")
        for rung, count in self.served.most_common():
            self.say(f"    {rung:<20} {count}")


def describe(outcome: Outcome) -> str:
    """Render one request's outcome as a narration line."""
    if outcome.status == 0:
        return "no answer from the gateway"
    line = f"{outcome.status} served by {outcome.served_by}"
    if outcome.degraded:
        meaning = _DEGRADED.get(outcome.degraded, outcome.degraded)
        line += f"  [degraded: {outcome.degraded}: {meaning}]"
    return f"{line}   attempts: {outcome.attempts}"


_DEGRADED: Final = {
    "fallback": "a later rung of the chain answered",
    "static": "the model's configured static answer",
    "cache": "a cached answer",
}


def narrate(transition: Transition) -> str:
    """Explain one breaker transition to a newcomer."""
    who, to = transition.deployment, transition.to_state.value
    if to == "open":
        wait = (transition.retry_at_wall or transition.at_wall) - transition.at_wall
        return (
            f"BREAKER OPEN on {who}: {transition.reason}. Requests skip it at once"
            f" (no upstream call) and fall back; a probe in {wait:.1f}s."
        )
    if to == "half_open":
        return (
            f"PROBE: the open period of {who} is over; one trial request goes through."
        )
    return f"BREAKER CLOSED on {who}: {transition.reason}."


def run_demo(*, fast: bool = False, out: IO[str] | None = None) -> int:
    """Run the tour; return 0 when the primary recovered, else 1."""
    stream = out or sys.stdout
    pace = FAST if fast else NORMAL
    # Transitions and access lines are what the tour narrates: keep them quiet.
    quiet = logging.NullHandler()
    logging.getLogger("fusebox").addHandler(quiet)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="fusebox-demo-") as store,
            FakeUpstream() as up,
        ):
            app = create_app(parse_config(demo_config(up.url, store, pace)), environ={})
            gateway = GatewayThread(app)
            gateway.start()
            try:
                return _tour(gateway, up, pace, stream)
            finally:
                gateway.stop()
    finally:
        logging.getLogger("fusebox").removeHandler(quiet)


def _tour(gateway: GatewayThread, up: FakeUpstream, pace: Pace, out: IO[str]) -> int:
    base = f"http://127.0.0.1:{gateway.port}"
    length = pace.healthy_s + pace.outage_s + pace.max_open_s
    print(
        f"Fusebox chaos demo: about {length:.0f}s. Chain: {PRIMARY} -> {BACKUP} ->"
        f" @static.\nBreakers judge the last {pace.window_s:g}s (at least 4 calls) and"
        f" stay open {pace.open_s:g}s, doubling up to {pace.max_open_s:g}s.\n"
        f"Watch it live on the status page: {base}/fusebox/\n"
        f"(also {base}/fusebox/status and {base}/metrics). Ctrl+C stops the tour.",
        file=out,
        flush=True,
    )
    tour = Tour(gateway, script(up, pace), pace, out)
    try:
        recovered = tour.run()
    except KeyboardInterrupt:
        tour.say("interrupted")
        return 130
    tour.summary()
    return 0 if recovered else 1
