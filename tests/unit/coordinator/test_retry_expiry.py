"""A saga a failed batch stored is not expired before the batch's retry re-sends it.

The rule (RRev3 #1, on top of RRev F3): a batch that fails after its records were
acknowledged is tried again by its lane, and the retry re-sends the stored outbox of the
sagas the failed try wrote (``InboxProcessor.unsent``). The lane waits between the tries
outside the partition's lock, so the expirer may run in between. A marker keeps no
outbox: expired there, the saga's events of the failed try would never be sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP

from coordinator import CoordinatorSettings, SagaRegistry
from coordinator._app import Coordinator
from coordinator._local import LocalResult
from coordinator._machine import transition
from coordinator._messages import StartSaga, StepRequest, StepResult
from coordinator._retention import Retention
from coordinator._routing import partition_for
from coordinator._state import SagaState
from coordinator.events import ErrorInfo
from tests.unit.coordinator.sagas import linear_saga
from tests.unit.coordinator.shell_kit import FakeProducer, leased
from tests.unit.coordinator.test_onehop import settle

T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: s1 has no compensation: its late success is recorded, and the saga stays compensated
DEFINITION = linear_saga(2, without_compensation=frozenset({1}))
REGISTRY = SagaRegistry([DEFINITION])
NO = ErrorInfo(type="Declined", message="no", retryable=False)


def compensated() -> tuple[SagaState, StepRequest]:
    """Saga "s": s0 done, s1 declined, s0 undone (compensated); and s1's request."""
    keep = Retention(keep=T0 - T0)  # its retention ends at once: it is due for expiry
    out = transition(REGISTRY, None, StartSaga(saga_id="s", saga_type="linear2", input={}),
                     now=T0, retention=keep)  # fmt: skip
    state, s1 = out.state, None
    for answer in ("ok", "no", "ok"):  # s0's action, s1's action, s0's compensation
        request = out.requests[0]
        s1 = request if request.step == "s1" else s1
        error = NO if answer == "no" else None
        result = request.result(at=T0, output={"ref": "r"} if error is None else None, error=error)
        out = transition(REGISTRY, state, result, now=T0, retention=keep)
        state = out.state
    assert state is not None and s1 is not None and state.status == "compensated"
    return state, s1


def late_success_events(producer: FakeProducer) -> list[str]:
    return [e["type"] for s in producer.to("t.lifecycle") for e in s.events()
            if e["type"] == "step_late_success"]  # fmt: skip


async def test_a_saga_a_failed_batch_stored_is_expired_only_after_the_retry_re_sent_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = CoordinatorSettings.model_validate(
        {"web_enabled": False, "datadir": tmp_path, "topic_prefix": "t", "partitions": 4}
    )
    worker = Coordinator(settings, REGISTRY)
    leased(worker)
    producer = FakeProducer()
    worker.processor.producer = worker.expirer.producer = producer
    state, s1 = compensated()
    p = partition_for("s", 4)
    worker.store.write(p, {"s": state.model_dump_json().encode()}, None)
    monkeypatch.setattr(worker.app.consumer, "assignment", lambda: {TP("t.inbox", p)})
    worker._on_rebalance_complete(None)
    try:
        assert worker._rebuilding is not None
        await worker._rebuilding  # "s" waits for its expiry
        await settle()
        assert worker.expirer.held == {p}, "the lane's prelude is done"
        failed = asyncio.Event()
        send_batch = producer.send_batch

        async def buggy(topic: str, partition: int, records: Sequence[Any]) -> Any:
            if topic == "t.lifecycle" and not failed.is_set():
                failed.set()
                raise RuntimeError("a bug in the sends phase (not broker trouble)")
            return await send_batch(topic, partition, records)

        producer.send_batch = buggy  # type: ignore[method-assign]
        # s1's participant contradicts its definite failure: a late success, recorded
        late: StepResult = s1.result(at=T0, output={"ref": "late"})
        assert worker.inbox_lanes.put_local(p, LocalResult(late))
        await failed.wait()  # stored and acknowledged; its events not sent; the lane waits
        assert SagaState.model_validate_json(worker.store.get("s") or b"").steps[1].late_success
        worker.expirer.tick()  # the timer, while the lane waits to try the batch again
        await settle()
        for _ in range(100):  # the lane's retry (after its back-off)
            if not worker.processor.unsent:
                break
            await asyncio.sleep(0.05)
        assert not worker.processor.unsent, "the retry ran and sent"
        assert late_success_events(producer) == ["step_late_success"], (
            "the late success the failed try stored was sent by the retry"
        )
        worker.expirer.tick()
        await settle()
        assert SagaState.model_validate_json(worker.store.get("s") or b"").compact, (
            "expired once the retry re-sent it"
        )
    finally:
        await worker.inbox_lanes.stop()
        await worker.expirer.stop()
