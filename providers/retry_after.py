"""Reading an upstream's ``Retry-After``: how long a 429 or 503 asks us to wait.

Adapters call ``parse_retry_after`` when they map a response to an
``UpstreamError`` (its ``retry_after_s``); the retry layer and the 429 pause
board above them only ever see the number of seconds.
"""

from __future__ import annotations

import math
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

_MS_PER_S = 1000.0


def parse_retry_after(headers: Mapping[str, str], now_wall: float) -> float | None:
    """Return the seconds an upstream asks us to wait, or None if it did not say.

    ``retry-after-ms`` (milliseconds, as OpenAI sends it) wins over
    ``retry-after`` (seconds, or an HTTP-date, counted from ``now_wall``). A
    value in the past counts as 0; an unreadable header is ignored.

    Args:
        headers: Response headers, case-insensitive (aiohttp's) or lower-case keys.
        now_wall: Current unix time, to turn an HTTP-date into seconds.

    Returns:
        Seconds to wait (0 or more), or None.
    """
    millis = _number(headers.get("retry-after-ms"))
    if millis is not None:
        return max(millis / _MS_PER_S, 0.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is None:
        seconds = _http_date(value, now_wall)
    return None if seconds is None else max(seconds, 0.0)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    # float() also accepts "nan" and "inf", which are no wait at all.
    return number if math.isfinite(number) else None


def _http_date(value: str, now_wall: float) -> float | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are GMT; "-0000" parses as naive.
        when = when.replace(tzinfo=UTC)
    return when.timestamp() - now_wall
