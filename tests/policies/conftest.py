"""Fixtures for the policy tests: anyio on asyncio only, and a fake clock."""

from __future__ import annotations

import pytest

from tests.fakes.clock import FakeClock


@pytest.fixture
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio, the gateway's only loop."""
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    """Return a fresh fake clock at t=1000 with a seeded generator."""
    return FakeClock()
