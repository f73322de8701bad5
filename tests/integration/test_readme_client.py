"""The README's "From Python" example runs, as written, against a real worker, the real
broker and the example HTTP services."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.stack import OrderStack
from tests.readme import python_block

pytestmark = pytest.mark.integration


async def test_readme_python_client_example(
    stack: OrderStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.coordinator()
    example: dict[str, Any] = {}
    exec(compile(python_block("### From Python"), "README.md", "exec"), example)
    await example["place_order"](stack.settings())
    assert capsys.readouterr().out.splitlines() == [
        "order_fulfillment:42",
        "completed ['succeeded', 'succeeded', 'succeeded', 'succeeded', 'succeeded']",
    ]
