"""A new owner expires a partition's sagas only once its lane re-sent the last batch.

The rule (review-local #6): a finished saga of a partition's last batch may have events a
killed owner never sent; the new owner's lane re-sends them from the saga's stored outbox
(``Resend``) before it applies anything. An expiry before that would replace the record
with a marker, which keeps no outbox: the events would never be sent. So the expirer
takes a partition only once its lane's prelude batch is done (``Expirer.ready``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP

from coordinator import CoordinatorSettings, SagaRegistry
from coordinator._app import Coordinator
from coordinator._local import EPOCH
from coordinator._routing import partition_for
from coordinator._state import SagaState
from tests.unit.coordinator.sagas import linear_saga
from tests.unit.coordinator.shell_kit import FakeProducer, leased
from tests.unit.coordinator.test_expiry import record
from tests.unit.coordinator.test_onehop import settle

LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)
COMPLETED = '{"type":"saga_completed","saga_id":"s","seq":4}'


def finished_in_the_last_batch() -> bytes:
    """Saga "s": completed in batch 3.0, its events unsent, due for expiry long ago."""
    state = record("s", "completed", expires_at=LONG_AGO)
    state.last_outbox, state.batch = [{"kind": "event", "payload": COMPLETED}], 3 * EPOCH
    return state.model_dump_json().encode()


async def test_a_partition_is_expired_only_after_its_lane_re_sent_the_last_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = CoordinatorSettings.model_validate(
        {"web_enabled": False, "datadir": tmp_path, "topic_prefix": "tk", "partitions": 4}
    )
    worker = Coordinator(settings, SagaRegistry([linear_saga(2)]))
    producer = FakeProducer()
    worker.processor.producer = worker.expirer.producer = producer
    p = partition_for("s", 4)
    worker.store.write(p, {"s": finished_in_the_last_batch()}, None)
    inbox = worker.inbox.get_topic_name()
    monkeypatch.setattr(worker.app.consumer, "assignment", lambda: {TP(inbox, p)})
    worker.app.consumer_generation_id = 4
    leased(worker, 4)
    go = asyncio.Event()
    scan = worker.recovery.scan

    def slow_scan(*args: Any, **kwargs: Any) -> Coroutine[Any, Any, None]:
        async def after_go() -> None:
            await go.wait()  # the table is big: the lane waits for its partition's scan
            await scan(*args, **kwargs)

        return after_go()

    monkeypatch.setattr(worker.recovery, "scan", slow_scan)
    worker._on_rebalance_complete(None)  # the new owner's assignment
    try:
        assert worker._rebuilding is not None
        await worker._rebuilding  # the deadline index queued "s" for its expiry
        worker.expirer.tick()  # the timer, before the lane's prelude
        await settle()
        assert SagaState.model_validate_json(worker.store.get("s") or b"").compact is False
        go.set()
        await settle()
        sent = [s.value.decode() for s in producer.to(settings.topics.lifecycle)]
        assert sent == [COMPLETED], "the killed owner's unsent event was re-sent"
        assert worker.expirer.held == {p}, "its lane is ready: the partition may expire"
        worker.expirer.tick()
        await settle()
        assert SagaState.model_validate_json(worker.store.get("s") or b"").compact is True
    finally:
        await worker.inbox_lanes.stop()
        await worker.expirer.stop()
