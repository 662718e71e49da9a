"""Shared fixtures: one fake upstream on a real socket for the whole session."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from gateway.fakeupstream import FakeUpstream

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[FakeUpstream]:
    """Serve one fake upstream on 127.0.0.1 for the whole session."""
    fake = FakeUpstream()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def upstream(upstream_server: FakeUpstream) -> FakeUpstream:
    """Hand a test the fake upstream with its records, scripts and modes cleared."""
    upstream_server.reset()
    return upstream_server


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio only."""
    return "asyncio"
