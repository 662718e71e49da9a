"""Reading the wait an upstream asks for in ``retry-after-ms`` and ``retry-after``."""

from __future__ import annotations

import pytest

from providers.retry_after import parse_retry_after

NOW = 1_445_412_470.0  # ten seconds before Wed, 21 Oct 2015 07:28:00 GMT


def test_milliseconds_win_over_seconds() -> None:
    """OpenAI's precise retry-after-ms is used even when retry-after is present."""
    headers = {"retry-after-ms": "1500", "retry-after": "20"}
    assert parse_retry_after(headers, NOW) == 1.5


@pytest.mark.parametrize(
    ("value", "expected"), [("20", 20.0), ("0.5", 0.5), (" 3 ", 3.0), ("0", 0.0)]
)
def test_seconds_are_read_as_a_number(value: str, expected: float) -> None:
    """A numeric retry-after is a wait in seconds, fractions allowed."""
    assert parse_retry_after({"retry-after": value}, NOW) == expected


@pytest.mark.parametrize(
    "value", ["Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 -0000"]
)
def test_an_http_date_is_counted_from_now(value: str) -> None:
    """An HTTP-date retry-after becomes the seconds from now until that date."""
    assert parse_retry_after({"retry-after": value}, NOW) == pytest.approx(10.0)


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after": "-5"},
        {"retry-after-ms": "-200"},
        {"retry-after": "Wed, 21 Oct 2015 07:27:00 GMT"},
    ],
)
def test_a_wait_in_the_past_is_no_wait(headers: dict[str, str]) -> None:
    """A negative wait or a date already gone means retry at once, not never."""
    assert parse_retry_after(headers, NOW) == 0.0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"retry-after": "soon"},
        {"retry-after": ""},
        {"retry-after": "nan"},
        {"retry-after-ms": "inf"},
        {"retry-after": "Wed, 32 Foo 2015 07:28:00 GMT"},
        {"x-other": "5"},
    ],
)
def test_garbage_or_absence_means_no_advice(headers: dict[str, str]) -> None:
    """Without a readable Retry-After the caller falls back to its own backoff."""
    assert parse_retry_after(headers, NOW) is None


def test_unreadable_milliseconds_fall_back_to_seconds() -> None:
    """A broken retry-after-ms does not hide a usable retry-after."""
    headers = {"retry-after-ms": "lots", "retry-after": "7"}
    assert parse_retry_after(headers, NOW) == 7.0
