"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.stack import OrderStack


@pytest.fixture
async def stack(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> AsyncIterator[OrderStack]:
    """The example HTTP services running; start coordinator workers with ``coordinator()``."""
    s = OrderStack(kafka_bootstrap, topic_prefix, tmp_path)
    s.start_services()
    try:
        yield s
    finally:
        s.close()
