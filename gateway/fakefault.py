"""The fake upstream's fault grammar, its scripts and its request log.

Outside the onion: test equipment behind ``gateway.fakeupstream``. A fault
string is ``~``-joined tokens (``"slowfirst200~cut3"``); a model name carries
one after its first ``~`` (``"gpt-a~503"``). Tokens:

==================  ===========================================================
``ok``              no fault
``<status>``        answer that HTTP status (400-599) with the wire's error body;
                    ``429``, ``500``, ``502``, ``503``, ``529``, ``401``,
                    ``404`` have realistic bodies
``<status>ra<s>``   the same plus ``Retry-After: <s>`` and ``retry-after-ms``
``ctx``             400 context too long; ``policy`` 400 content policy;
                    ``bad`` 400 invalid temperature
``once<status>``    that error for the first request of this model and fault
                    string only (``once500``, ``once429``, ``oncectx``...)
``reset``           abort the connection (RST) before any response byte
``hang``            never answer; wait for the client to go away
``delay<ms>``       wait before doing anything
``slowfirst<ms>``   wait before the first content (plain: before the response)
``gap<ms>``         wait between streamed content chunks
``words<n>``        answer with ``n`` words instead of 8
``cut<n>``          stream: close the connection after ``n`` content chunks
``stall<n>``        stream: go silent after ``n`` content chunks
``malformed<n>``    stream: send a non-JSON event after ``n`` content chunks
``errorevent<n>``   stream: send an in-band error event after ``n`` chunks
``nodone``          stream: end without ``[DONE]`` (Anthropic: ``message_stop``)
==================  ===========================================================

Mid-stream faults fire after ``min(n, chunks)`` chunks; the earliest wins.
Stream-only faults are ignored by plain requests. A script (per model, the
suffix stripped) overrides the suffix: queued fault strings are consumed one
per request, then the model's mode (if set) applies to every request.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, Final

import msgspec

from gateway.fakeanswer import WORDS

if TYPE_CHECKING:
    from collections.abc import Iterable

_STATUS: Final = re.compile(r"(?P<status>[45]\d\d)(?:ra(?P<ra>\d+(?:\.\d+)?))?")
_NUMBERED: Final = re.compile(r"(?P<name>[a-z]+)(?P<n>\d+)")
_FLAGS: Final = frozenset({"reset", "hang", "nodone"})
_KINDS: Final = frozenset({"ctx", "policy", "bad"})
_DELAYS: Final = {"delay": "delay_ms", "slowfirst": "slowfirst_ms", "gap": "gap_ms"}
_COUNTS: Final = frozenset({"cut", "stall", "malformed", "errorevent", "words"})
_BREAKS: Final = ("cut", "stall", "malformed", "errorevent")
#: The request log keeps this many records; ``count`` stays exact beyond it.
MAX_RECORDS: Final = 100_000


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """What to do to one request, parsed from a fault string."""

    status: str | None = None
    once: bool = False
    retry_after: str | None = None
    reset: bool = False
    hang: bool = False
    delay_ms: int = 0
    slowfirst_ms: int = 0
    gap_ms: int = 0
    words: int = WORDS
    cut: int | None = None
    stall: int | None = None
    malformed: int | None = None
    errorevent: int | None = None
    nodone: bool = False

    def break_point(self) -> tuple[str, int] | None:
        """Return the earliest mid-stream fault and its chunk count, if any."""
        found = [
            (count, name)
            for name in _BREAKS
            if (count := getattr(self, name)) is not None
        ]
        if not found:
            return None
        count, name = min(found)
        return name, count

    def spent(self) -> Plan:
        """Return this plan without its error (a ``once`` fault already used)."""
        return msgspec.structs.replace(self, status=None, retry_after=None, once=False)


def _numbered(part: str) -> dict[str, object]:
    match = _NUMBERED.fullmatch(part)
    if match is not None:
        name, count = match["name"], int(match["n"])
        if name in _DELAYS:
            return {_DELAYS[name]: count}
        if name in _COUNTS:
            return {name: count}
    raise ValueError(f"unknown fault {part!r}")


def _token(part: str) -> dict[str, object]:
    if part == "ok":
        return {}
    if part in _FLAGS:
        return {part: True}
    if part in _KINDS:
        return {"status": part}
    if part.startswith("once"):
        inner = _token(part.removeprefix("once"))
        if "status" not in inner:
            raise ValueError(f"'once' needs an error status: {part!r}")
        return {**inner, "once": True}
    if (match := _STATUS.fullmatch(part)) is not None:
        return {"status": match["status"], "retry_after": match["ra"]}
    return _numbered(part)


@functools.lru_cache(maxsize=1024)
def parse_faults(faults: str) -> Plan:
    """Parse a ``~``-joined fault string; raise ValueError on an unknown token."""
    fields: dict[str, Any] = {}
    for part in faults.split("~"):
        if part:
            fields.update(_token(part))
    return Plan(**fields)


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """One request the fake upstream received (faulted ones too)."""

    #: The model with its fault suffix stripped ("" when the request had none).
    model: str
    #: The model exactly as requested.
    full_model: str
    path: str
    stream: bool
    #: ``time.monotonic()`` when the request arrived.
    time: float
    #: Request headers, names in lower case.
    headers: dict[str, str]
    #: The decoded JSON body (None when absent or not JSON).
    body: Any = None
    #: The fault string applied ("ok" for none).
    fault: str = "ok"


class Choice(msgspec.Struct, frozen=True):
    """The fault chosen for one request, and the request's sequence number."""

    model: str
    fault: str
    plan: Plan
    seq: int
    #: Why the fault string could not be used (an unknown token), if it could not.
    problem: str | None = None


class FaultBook:
    """Scripts, modes, once-state and the request log; safe across threads.

    The server's loop thread chooses and records; test threads script and
    read. Each method holds the lock for a few dictionary operations only.
    """

    def __init__(self) -> None:
        """Start with no scripts, no modes and an empty log."""
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[str]] = {}
        self._modes: dict[str, str] = {}
        self._spent: set[str] = set()
        self._records: deque[Record] = deque(maxlen=MAX_RECORDS)
        self._counts: Counter[str] = Counter()
        self._seq = 0

    def script(self, model: str, faults: Iterable[str]) -> None:
        """Queue fault strings for ``model``, one per coming request."""
        queued = list(faults)
        for fault in queued:
            parse_faults(fault)
        with self._lock:
            self._scripts.setdefault(model, deque()).extend(queued)

    def set_mode(self, model: str, fault: str | None) -> None:
        """Apply ``fault`` to every request of ``model`` once its script is empty.

        None clears the mode (the model suffix applies again); ``"ok"`` is a
        mode too, and masks the suffix.
        """
        if fault is not None:
            parse_faults(fault)
        with self._lock:
            if fault is None:
                self._modes.pop(model, None)
            else:
                self._modes[model] = fault

    def choose(self, requested: str) -> Choice:
        """Pick the fault for a request naming ``requested`` as its model."""
        model, _, suffix = requested.partition("~")
        with self._lock:
            self._seq += 1
            seq = self._seq
            queue = self._scripts.get(model)
            fault = queue.popleft() if queue else self._modes.get(model, suffix)
            try:
                plan = parse_faults(fault)
            except ValueError as exc:
                return Choice(model, fault, Plan(), seq, str(exc))
            if plan.once:
                key = f"{model}~{fault}"
                plan = plan.spent() if key in self._spent else plan
                self._spent.add(key)
        return Choice(model, fault or "ok", plan, seq)

    def record(self, record: Record) -> None:
        """Append ``record`` to the log."""
        with self._lock:
            self._records.append(record)
            self._counts[record.model] += 1

    def records(self, model: str | None = None) -> list[Record]:
        """Return the logged requests, oldest first, for ``model`` if given."""
        with self._lock:
            records = list(self._records)
        if model is None:
            return records
        return [r for r in records if r.model == model]

    def count(self, model: str) -> int:
        """Return how many requests named ``model`` (suffix stripped)."""
        with self._lock:
            return self._counts[model]

    def reset(self) -> None:
        """Forget scripts, modes, once-state and the log; restart the numbering."""
        with self._lock:
            self._seq = 0
            self._scripts.clear()
            self._modes.clear()
            self._spent.clear()
            self._records.clear()
            self._counts.clear()
