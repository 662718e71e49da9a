"""The request log and the event log: what happened, never what was said.

One ``fusebox.access`` record per finished chat request, and ``fusebox.events``
records for breaker transitions and config reloads. A record carries a
``LogEvent`` as its only argument: the JSON formatter (``gateway.logsetup``)
encodes its fields, and ``str(event)`` is the readable text line, rendered
lazily in the log thread. Nothing here ever holds a key, a prompt or a
completion: the fields are ids, names, statuses, timings and token counts.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from policies.breaker import BreakerState
from policies.fallback import describe

if TYPE_CHECKING:
    from gateway.request import RequestContext
    from policies.breaker import Transition

access_log: Final = logging.getLogger("fusebox.access")
event_log: Final = logging.getLogger("fusebox.events")


class LogEvent:
    """One structured log event: its name and JSON-ready fields."""

    __slots__ = ("event", "fields")

    def __init__(self, event: str, fields: dict[str, Any]) -> None:
        """Hold ``fields`` (plain JSON values only)."""
        self.event = event
        self.fields = fields

    def __str__(self) -> str:
        """Render ``event key=value ...`` for the text format."""
        parts = [self.event]
        parts.extend(f"{k}={_text(v)}" for k, v in self.fields.items())
        return " ".join(parts)


class AccessEvent(LogEvent):
    """The access line of one chat request."""

    __slots__ = ()

    def __str__(self) -> str:
        """Render one readable line: who, what, where it was served, how long."""
        f = self.fields
        ttft = f["ttft_ms"]
        line = (
            f"{f['request_id']} {f['tenant'] or '-'} {f['alias'] or '-'}"
            f" -> {f['served_by'] or '-'} {f['status'] or '-'}"
            f" {f['duration_ms']:.1f}ms"
            f" ttft={'-' if ttft is None else f'{ttft:.1f}ms'}"
            f" tokens={_count(f['prompt_tokens'])}/{_count(f['completion_tokens'])}"
            f' attempts="{f["attempts"]}"'
        )
        if f["degraded"]:
            line += f" degraded={f['degraded']}"
        if f["stream"]:
            line += " stream"
        return line


class TransitionEvent(LogEvent):
    """A breaker transition."""

    __slots__ = ()

    def __str__(self) -> str:
        """Render ``breaker <deployment>: <from> -> <to> (<reason>)``."""
        f = self.fields
        return f"breaker {f['deployment']}: {f['from']} -> {f['to']} ({f['reason']})"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _text(value: object) -> str:
    if isinstance(value, str) and (" " in value or not value):
        return f'"{value}"'
    return str(value)


def _emit(logger: logging.Logger, level: int, event: LogEvent) -> None:
    """Hand ``event`` to the handlers without walking the stack for the caller."""
    record = logger.makeRecord(logger.name, level, "", 0, "%s", (event,), None)
    logger.handle(record)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def log_request(ctx: RequestContext) -> None:
    """Write the access line of a finished request (when INFO is enabled)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    usage = ctx.usage
    started = ctx.started
    first = ctx.first_byte_at
    fields = {
        "request_id": ctx.request_id,
        "endpoint": ctx.endpoint,
        "tenant": ctx.tenant,
        "alias": ctx.alias,
        "served_by": ctx.served_by,
        "status": ctx.status,
        "attempts": describe(ctx.trail),
        "duration_ms": _ms(ctx.clock.monotonic() - started),
        "ttft_ms": None if first is None else _ms(first - started),
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
        "degraded": ctx.degraded,
        "stream": ctx.stream,
        "cache_age_s": ctx.cache_age_s,
    }
    _emit(access_log, logging.INFO, AccessEvent("request", fields))


def log_transition(transition: Transition) -> None:
    """Write a ``breaker_transition`` event (WARNING when a breaker opens)."""
    opened = transition.to_state is BreakerState.OPEN
    level = logging.WARNING if opened else logging.INFO
    if not event_log.isEnabledFor(level):
        return
    fields = {
        "deployment": transition.deployment,
        "from": transition.from_state.value,
        "to": transition.to_state.value,
        "reason": transition.reason,
        "at": transition.at_wall,
        "retry_at": transition.retry_at_wall,
        "remote": transition.is_remote,
    }
    _emit(event_log, level, TransitionEvent("breaker_transition", fields))


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:  # noqa: ANN401
    """Write any other event, e.g. ``log_event("config_reload", ok=True, path=p)``."""
    if event_log.isEnabledFor(level):
        _emit(event_log, level, LogEvent(event, fields))
