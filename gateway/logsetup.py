"""Logging setup for ``fusebox serve``: text or JSON lines, written off the hot path.

A ``QueueHandler`` on the root logger only enqueues records; a ``QueueListener``
thread formats them and writes them out. Fusebox's own records (a
``gateway.reqlog.LogEvent`` argument) are enqueued untouched, so even their
text is rendered in that thread, not in the request's.
"""

from __future__ import annotations

import atexit
import copy
import logging
import logging.handlers
import os
import queue
import sys
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Final

import msgspec

from gateway.reqlog import LogEvent

if TYPE_CHECKING:
    from collections.abc import Callable

#: ``serve`` passes the settings to worker processes through this variable.
LOG_ENV: Final = "FUSEBOX_LOG"
_encode: Final[Callable[[object], bytes]] = msgspec.json.Encoder().encode
_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_PLAIN: Final = logging.Formatter()


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Encode ``record``; a plain message goes into ``message``."""
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        event = _event_of(record)
        if event is not None:
            out["event"] = event.event
            out.update(event.fields)
        else:
            out["message"] = record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
            if record.exc_text:
                out["exc"] = record.exc_text
        return _encode(out).decode()


class _DeferredQueueHandler(logging.handlers.QueueHandler):
    """Enqueue Fusebox events as they are; other records are formatted first."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """Leave a ``LogEvent`` record for the listener thread to render."""
        if _event_of(record) is not None:
            return record
        # Merge the arguments now (they may change later); keep the traceback apart.
        prepared = copy.copy(record)
        prepared.msg = prepared.message = record.getMessage()
        prepared.args = None
        if record.exc_info:
            prepared.exc_text = _PLAIN.formatException(record.exc_info)
            prepared.exc_info = None
        return prepared


def _event_of(record: logging.LogRecord) -> LogEvent | None:
    args = record.args
    if isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], LogEvent):
        return args[0]
    return None


class LogSetup:
    """The installed queue handler and its listener thread."""

    def __init__(
        self, handler: logging.Handler, listener: logging.handlers.QueueListener
    ) -> None:
        """Hold what ``stop`` undoes."""
        self.handler = handler
        self.listener = listener
        self.stopped = False

    def stop(self) -> None:
        """Flush every queued record, stop the thread and remove the handler."""
        if self.stopped:
            return
        self.stopped = True
        logging.getLogger().removeHandler(self.handler)
        self.listener.stop()


_current: LogSetup | None = None


def configure_logging(
    level: str = "info", fmt: str = "text", stream: IO[str] | None = None
) -> LogSetup:
    """Send every log record to ``stream`` (stderr) as ``json`` or ``text`` lines.

    Replaces an earlier setup made by this function. ``level`` applies to the
    ``fusebox`` loggers; other libraries log at WARNING and above.
    """
    global _current  # noqa: PLW0603 - one process-wide logging setup
    if _current is not None:
        _current.stop()
    out = logging.StreamHandler(stream or sys.stderr)
    out.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT)
    )
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = _DeferredQueueHandler(records)
    listener = logging.handlers.QueueListener(records, out, respect_handler_level=True)
    # Our formats never show the process name: skip looking it up per record.
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.addHandler(handler)
    threshold = _level(level)
    root.setLevel(max(threshold, logging.WARNING))
    logging.getLogger("fusebox").setLevel(threshold)
    listener.start()
    _current = LogSetup(handler, listener)
    atexit.register(_current.stop)
    return _current


def _level(name: str) -> int:
    value = logging.getLevelName(str(name).upper())
    return value if isinstance(value, int) else logging.INFO


def export_settings(level: str, fmt: str) -> None:
    """Remember the settings for worker processes (see ``configure_from_env``)."""
    os.environ[LOG_ENV] = f"{level}:{fmt}"


def configure_from_env() -> None:
    """In a worker process, set up logging as ``serve`` did (once)."""
    if _current is not None or LOG_ENV not in os.environ:
        return
    level, _, fmt = os.environ[LOG_ENV].partition(":")
    configure_logging(level, fmt)
