"""Fixtures shared by the integration tests, and the post-mortem of a failed one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import postmortem
from tests.integration.stack import OrderStack


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any]:
    """A failed test that used an ``OrderStack`` fixture (``stack``, or one of its own)
    reports its processes' logs and the inbox positions (``postmortem``): a failure in CI
    explains itself."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for stack in getattr(item, "funcargs", {}).values():
        if isinstance(stack, OrderStack):
            for title, text in postmortem.sections(stack):
                report.sections.append((f"post-mortem: {title}", text))


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
