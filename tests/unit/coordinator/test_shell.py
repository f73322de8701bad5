"""The inbox batch processor without a broker: durable order of effects, redelivery,
dead letters, inline chains, size limits, re-routing (in-memory producer and store)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from coordinator import Saga, SagaRegistry, Service, Step, StepContext
from coordinator._delivery import Abandoned
from coordinator._messages import StepRequest, TimerFired
from coordinator._outbox import render, request_of
from coordinator._routing import partition_for
from coordinator._state import SagaState
from tests.integration.inline_sagas import MIXED
from tests.unit.coordinator.sagas import linear_saga
from tests.unit.coordinator.shell_kit import (
    AT,
    CHANGELOG,
    PARTITIONS,
    DictStore,
    FakeProducer,
    Inbox,
    never,
    processor,
    start,
)

REGISTRY = SagaRegistry([linear_saga(2), MIXED])


def stored(store: DictStore, saga_id: str) -> SagaState:
    return SagaState.model_validate_json(store[saga_id])


def types(producer: FakeProducer) -> list[str]:
    return [e["type"] for s in producer.to("t.lifecycle") for e in s.events()]


def result_for(producer: FakeProducer, step: str, **output: Any) -> bytes:
    body = next(s.body() for s in producer.to("t.step.svc") if s.body()["step"] == step)
    return StepRequest.model_validate(body).result(at=AT, output=output).to_json()


async def test_the_record_is_acknowledged_before_anything_derived_is_sent() -> None:
    producer, store = FakeProducer(), DictStore()
    proc, inbox = processor(REGISTRY, producer, store), Inbox()
    event = inbox.event("s1", start("linear2", "s1"))
    producer.hold = True
    task = asyncio.create_task(proc.handle(event.message.partition, [event], never))
    for _ in range(20):
        await asyncio.sleep(0)
    assert [s.topic for s in producer.enqueued] == [CHANGELOG], "only the record, unacked"
    assert "s1" not in store, "the local store follows the broker, not the other way"
    producer.release()
    producer.hold = True
    for _ in range(20):
        await asyncio.sleep(0)
    assert "s1" in store
    assert {s.topic for s in producer.enqueued[1:]} == {"t.step.svc", "t.lifecycle"}
    assert not task.done(), "the batch waits for the outbox acknowledgements too"
    producer.release()
    await task
    assert types(producer) == ["saga_started", "step_started"]


async def test_one_record_per_saga_per_batch_holding_the_whole_batch_outbox() -> None:
    producer, store = FakeProducer(), DictStore()
    proc, inbox = processor(REGISTRY, producer, store), Inbox()
    first = inbox.event("s1", start("linear2", "s1"))
    await proc.handle(first.message.partition, [first], never)
    producer.sent.clear()
    result = inbox.event("s1", result_for_first(store))
    dup = inbox.event("s1", start("linear2", "s1"))  # a duplicate start changes nothing
    await proc.handle(result.message.partition, [result, dup], never)
    assert len(producer.to(CHANGELOG)) == 1
    state = stored(store, "s1")
    assert state.last_message == f"{result.message.partition}:{result.message.offset}"
    outbox = [json.loads(render(o, state)) for o in state.last_outbox]
    requests = [s.body() for s in producer.sent if s.topic not in (CHANGELOG, "t.lifecycle")]
    assert [o for o in outbox if "type" not in o] == requests
    [events] = producer.to("t.lifecycle")  # one record carries the saga's events of the batch
    assert [o for o in outbox if "type" in o] == events.events()
    assert types(producer) == ["step_succeeded", "step_started"]


def result_for_first(store: DictStore) -> bytes:
    state = stored(store, "s1")
    return request_of(state.last_outbox[0], state).result(at=AT, output={"ref": "x"}).to_json()


async def test_a_redelivered_batch_re_sends_every_unacknowledged_outbox() -> None:
    """Two records change one saga in a batch; the record is stored, then the process
    dies before the sends are acknowledged: the redelivered batch sends both outboxes."""
    producer, store = FakeProducer(), DictStore()
    proc, inbox = processor(REGISTRY, producer, store), Inbox()
    begin = inbox.event("s1", start("linear2", "s1"))
    await proc.handle(begin.message.partition, [begin], never)
    s0 = inbox.event("s1", result_for(producer, "s0", ref="a"))
    batch = [s0]
    producer.failures = {"t.lifecycle": 1000}
    crashed = lambda: True  # noqa: E731 - the partition is gone at the first retry
    with pytest.raises(Abandoned):
        await proc.handle(s0.message.partition, batch, crashed)
    s1_request = [s for s in producer.to("t.step.svc") if s.body()["step"] == "s1"]
    s1 = inbox.event("s1", StepRequest.model_validate(s1_request[0].body()).result(
        at=AT, output={"ref": "b"}).to_json())  # fmt: skip
    producer.failures = {"t.lifecycle": 1000}
    with pytest.raises(Abandoned):
        await proc.handle(s0.message.partition, [s0, s1], crashed)
    assert stored(store, "s1").status == "completed"
    final = stored(store, "s1")
    outbox = final.last_outbox

    producer.failures, producer.sent = {}, []
    fresh = processor(REGISTRY, producer, store)  # a restarted worker
    await fresh.handle(s0.message.partition, [s0, s1], never)
    assert producer.to(CHANGELOG) == [], "nothing new to store: both were applied"
    assert [s.body() for s in producer.to("t.step.svc")] == [
        json.loads(render(o, final)) for o in outbox if o["kind"] == "request"
    ]
    [events] = producer.to("t.lifecycle")  # both outboxes' events, in seq order, one record
    assert events.events() == [json.loads(o["payload"]) for o in outbox if o["kind"] == "event"]
    assert types(producer) == ["step_succeeded", "step_started", "step_succeeded", "saga_completed"]


async def test_records_before_the_applied_offset_are_skipped() -> None:
    producer, store = FakeProducer(), DictStore()
    proc, inbox = processor(REGISTRY, producer, store), Inbox()
    begin = inbox.event("s1", start("linear2", "s1"))
    await proc.handle(begin.message.partition, [begin], never)
    cancel = inbox.event("s1", b'{"kind":"cancel","saga_id":"s1","at":"2026-01-01T00:00:00Z"}')
    await proc.handle(cancel.message.partition, [cancel], never)
    before = store["s1"]
    producer.sent.clear()
    await proc.handle(begin.message.partition, [begin], never)  # older than last_message
    assert producer.sent == [] and store["s1"] == before


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"s1", b"\xff not json", "invalid inbox message"),
        (b"other", start("linear2", "s1"), "must equal saga_id"),
        (b"s1", start("nope", "s1"), "saga type 'nope' is not registered"),
        (b"s1", start("mixed", "s1", fail_at=3), "input does not match Job"),
    ],
)
async def test_invalid_records_go_to_dead_letters(key: bytes, value: bytes, reason: str) -> None:
    producer, store = FakeProducer(), DictStore()
    proc, inbox = processor(REGISTRY, producer, store), Inbox()
    event = inbox.event("s1", value)
    event.message.key = key
    await proc.handle(event.message.partition, [event], never)
    [letter] = producer.sent
    assert letter.topic == "t.deadletters" and reason in letter.body()["reason"]
    assert store == {}


async def test_inline_steps_run_in_the_batch_and_their_chain_is_one_record() -> None:
    producer, store = FakeProducer(), DictStore()
    proc, inbox = processor(REGISTRY, producer, store), Inbox()
    event = inbox.event("m1", start("mixed", "m1"))
    await proc.handle(event.message.partition, [event], never)
    assert [s.topic for s in producer.sent].count("t.step.queued-work") == 1
    assert "t.step.inline-work" not in {s.topic for s in producer.sent}
    events = [e for s in producer.to("t.lifecycle") for e in s.events()]
    assert [e["step"] for e in events if e["type"] == "step_succeeded"] == ["a", "b"]
    assert [s.status for s in stored(store, "m1").steps] == [
        "succeeded",
        "succeeded",
        "running",
        "pending",
    ]


async def test_an_internal_error_dead_letters_that_record_and_the_batch_goes_on() -> None:
    producer, store = FakeProducer(), DictStore()
    registry = SagaRegistry([linear_saga(2)])
    proc, inbox = processor(registry, producer, store), Inbox()
    original, calls = registry.get, {"n": 0}

    def flaky_get(name: str, version: int | None = None) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("bug")
        return original(name, version)

    registry.get = flaky_get  # type: ignore[method-assign]
    ids = ["x1", "x2"]
    partition = partition_for("x1", PARTITIONS)
    same = next(f"y{i}" for i in range(100) if partition_for(f"y{i}", PARTITIONS) == partition)
    events = [
        inbox.event(ids[0], start("linear2", ids[0])),
        inbox.event(same, start("linear2", same)),
    ]
    await proc.handle(partition, events, never)
    letters = producer.to("t.deadletters")
    assert (
        len(letters) == 1 and "internal error: RuntimeError('bug')" in letters[0].body()["reason"]
    )
    assert set(store) == {same}


async def test_kafka_unavailable_is_retried_in_place() -> None:
    producer, store = FakeProducer(), DictStore()
    proc, inbox = processor(REGISTRY, producer, store), Inbox()
    producer.failures = {CHANGELOG: 2, "t.lifecycle": 3}
    event = inbox.event("s1", start("linear2", "s1"))
    await proc.handle(event.message.partition, [event], never)
    assert producer.failures == {CHANGELOG: 0, "t.lifecycle": 0}
    assert producer.to("t.deadletters") == []
    assert types(producer) == ["saga_started", "step_started"]
    assert stored(store, "s1").status == "running"


async def test_a_result_on_the_wrong_partition_is_re_routed_to_the_saga_partition() -> None:
    producer = FakeProducer()
    proc, inbox = processor(REGISTRY, producer), Inbox()
    home = partition_for("s1", PARTITIONS)
    wrong = (home + 1) % PARTITIONS
    event = inbox.event("s1", start("linear2", "s1"), partition=wrong)
    await proc.handle(wrong, [event], never)
    [moved] = producer.sent
    assert (moved.topic, moved.partition, moved.value) == ("t.inbox", home, event.message.value)


async def test_a_saga_whose_definition_is_missing_holds_its_partition_never_dead_letters() -> None:
    producer, store = FakeProducer(), DictStore()
    proc, inbox = processor(REGISTRY, producer, store), Inbox()
    begin = inbox.event("s1", start("linear2", "s1"))
    await proc.handle(begin.message.partition, [begin], never)
    producer.sent.clear()
    lacking = processor(SagaRegistry([MIXED]), producer, store)
    cancel = inbox.event("s1", b'{"kind":"cancel","saga_id":"s1","at":"2026-01-01T00:00:00Z"}')
    stop = {"now": False}
    task = asyncio.create_task(
        lacking.handle(cancel.message.partition, [cancel], lambda: stop["now"])
    )
    await asyncio.sleep(0.3)
    assert not task.done() and producer.sent == []
    stop["now"] = True
    with pytest.raises(Abandoned):
        await task


class Big(BaseModel):
    blob: str


async def big(ctx: StepContext[Big]) -> Big:
    return Big(blob="x" * 5000)


async def nothing(ctx: StepContext[Big]) -> None:
    return None


GROWING = Saga(
    "growing",
    input=Big,
    steps=[
        Step("a", service=Service("local", inline=True), action=big, compensation=nothing),
        Step("b", service=Service("far"), action=big, compensation=nothing),
    ],
)


async def test_a_request_over_the_limit_fails_its_step_and_earlier_steps_compensate() -> None:
    producer, store = FakeProducer(), DictStore()
    proc = processor(SagaRegistry([GROWING]), producer, store, max_request_bytes=4096)
    event = Inbox().event("g1", start("growing", "g1", blob="small"))
    await proc.handle(event.message.partition, [event], never)
    assert producer.to("t.step.far") == [], "the oversized request is never sent"
    state = stored(store, "g1")
    assert state.status == "compensated"
    assert state.steps[1].error is not None and state.steps[1].error.type == "StepRequestTooLarge"
    assert [s.status for s in state.steps] == ["compensated", "failed"]


async def test_a_result_over_the_inbox_limit_fails_its_step_and_is_dead_lettered() -> None:
    producer, store = FakeProducer(), DictStore()
    proc, inbox = processor(REGISTRY, producer, store, max_inbox_bytes=2048), Inbox()
    begin = inbox.event("s1", start("linear2", "s1"))
    await proc.handle(begin.message.partition, [begin], never)
    huge = inbox.event("s1", result_for(producer, "s0", ref="x" * 4000))
    await proc.handle(huge.message.partition, [huge], never)
    state = stored(store, "s1")
    assert state.steps[0].error is not None and state.steps[0].error.type == "ResultTooLarge"
    assert len(producer.to("t.deadletters")) == 1


async def test_a_record_that_would_grow_past_the_limit_is_dead_lettered_saga_unchanged() -> None:
    producer, store = FakeProducer(), DictStore()
    proc, inbox = processor(REGISTRY, producer, store, max_record_bytes=4096), Inbox()
    ok = inbox.event("s1", start("linear2", "s1"))
    partition = ok.message.partition
    other = next(f"z{i}" for i in range(100) if partition_for(f"z{i}", PARTITIONS) == partition)
    fine = inbox.event(other, start("linear2", other))
    await proc.handle(partition, [ok], never)
    request = result_for(producer, "s0", ref="y" * 3000)
    grow = inbox.event("s1", request)
    await proc.handle(partition, [grow, fine], never)
    letters = producer.to("t.deadletters")
    assert len(letters) == 1 and "SAGA_MAX_RECORD_BYTES" in letters[0].body()["reason"]
    assert stored(store, "s1").steps[0].status == "running", "the saga stays as it was"
    assert other in store, "the rest of the batch was applied"


async def test_a_timer_record_for_an_expired_saga_deletes_it_with_a_tombstone() -> None:
    """Expiry is the owning worker's own (``test_expiry``); a timer record for a finished
    saga (from an older version) still expires it. No dedupe window: no marker."""
    producer, store = FakeProducer(), DictStore()
    proc = processor(
        SagaRegistry([linear_saga(1)]),
        producer,
        store,
        retention=timedelta(0),
        dedupe_retention=timedelta(0),
    )
    inbox = Inbox()
    begin = inbox.event("s1", start("linear1", "s1"))
    await proc.handle(begin.message.partition, [begin], never)
    done = inbox.event("s1", result_for(producer, "s0", ref="a"))
    await proc.handle(done.message.partition, [done], never)
    assert stored(store, "s1").status == "completed"
    assert proc.deadlines.get("s1") is None, "no timer record for a finished saga"
    delete = inbox.event("s1", TimerFired(saga_id="s1").to_json())
    await proc.handle(delete.message.partition, [delete], never)
    assert "s1" not in store
    assert producer.to(CHANGELOG)[-1].value == b"", "a tombstone (no value)"
    assert proc.deadlines.get("s1") is None
