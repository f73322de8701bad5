"""The Faust agent itself, run in ``agent.test_context()`` (no broker)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.events import DeadLetter
from listeners import ListenerApp, ListenerSettings, create_app
from listeners._migrations import upgrade
from listeners.orders import get_order
from tests.listener_events import order_saga


@pytest.fixture
def built(tmp_path: Path) -> Iterator[ListenerApp]:
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    upgrade(url)
    settings = ListenerSettings(
        database_url=url, app_id="unit-listeners", data_dir=tmp_path / "data", batch_size=5
    )
    built = create_app(settings)
    yield built
    built.engine.dispose()


async def test_agent_applies_events_and_dead_letters_garbage(built: ListenerApp) -> None:
    letters: list[DeadLetter] = []

    async def sink(letter: DeadLetter) -> None:
        letters.append(letter)

    built.processor.dead_letters = sink
    events = order_saga("s1", "completed", order_id="o1")
    async with built.agent.test_context() as agent:
        await agent.put(b"\xff not json", key=b"s1")
        for event in events:
            await agent.put(event.to_json(), key=event.saga_id.encode())
        # Batches are applied once full (5) or after the batch window.
        for _ in range(200):
            if built.processor.stats.records == len(events) + 1:
                break
            await _tick()
    assert built.processor.stats.records == len(events) + 1
    assert [letter.error_type for letter in letters] == ["ValidationError"]
    assert letters[0].value() == b"\xff not json"
    with built.processor.sessions() as session:
        assert get_order(session, "o1").status == "completed"


async def _tick() -> None:
    import asyncio

    await asyncio.sleep(0.05)
