"""The README's failure table and examples stay true to the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from providers import errors

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")

# README row (first cell) -> the error class that the provider adapters raise for it.
ROWS = {
    "connect error, reset before headers": errors.UpstreamConnectError,
    "500, 502, 503, 504, 529": errors.UpstreamUnavailableError,
    "first-token or read timeout": errors.UpstreamTimeoutError,
    "401, 403, 404 from upstream": errors.UpstreamAuthError,
    "400 `context_length_exceeded`": errors.UpstreamContextLengthError,
    "other 400 / 413 / 422": errors.UpstreamBadRequestError,
}


def _row(first_cell: str) -> list[str]:
    for line in README.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"README failure table has no row {first_cell!r}")


@pytest.mark.parametrize(("row", "cls"), ROWS.items())
def test_failure_table_matches_the_error_classes(
    row: str, cls: type[errors.UpstreamError]
) -> None:
    """Each README failure-table row says what the error class actually does."""
    _, retried, next_rung, counted, _token = _row(row)
    assert retried.startswith("yes") == cls.retryable
    assert next_rung.startswith("yes") == cls.failover
    assert counted.startswith("yes") == cls.counts_as_failure


def test_rate_limit_row_matches() -> None:
    """429s are retried (after a wait), fail over, and never count against the breaker."""
    cls = errors.UpstreamRateLimitError
    assert cls.retryable
    assert cls.failover
    assert not cls.counts_as_failure
    assert _row("429 with Retry-After ≤ `max_retry_after_s`")[3].startswith("no")


def test_local_refusals_fail_over_without_counting() -> None:
    """Open breakers, pauses, full bulkheads and empty budgets all fail over at once."""
    for cls in (
        errors.CircuitOpenError,
        errors.DeploymentPausedError,
        errors.BulkheadFullError,
        errors.RetryBudgetError,
    ):
        assert cls.failover
        assert not cls.counts_as_failure
        assert (
            f"`{cls.token}`"
            in _row("breaker open, deployment paused, bulkhead full, budget empty")[4]
        )


@pytest.mark.parametrize("name", ["demo.toml", "fusebox.toml"])
def test_example_configs_load(name: str) -> None:
    """Every config under examples/ loads as written."""
    assert load_config(ROOT / "examples" / name).tenants
