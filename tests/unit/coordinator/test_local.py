"""Step results applied where they were produced (coordinator._local).

The rules: a result of this worker's own task joins its partition's lane and is applied
by the next batch, in the same order of effects as an inbox record (record acked, then
its sends), without crossing the inbox; every record carries its batch's number; a new
owner re-sends the stored outbox of the sagas of each partition's last batch before its
lane applies anything, and numbers its own batches after it; a result whose lane stopped
goes to the inbox.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coordinator._delivery import Abandoned
from coordinator._lanes import Lanes
from coordinator._local import LocalResult, Recovery, Resend, batch_of
from coordinator._messages import StepResult, parse_inbox
from coordinator._state import SagaState
from coordinator._tablestore import chunked
from tests.unit.coordinator.shell_kit import (
    CHANGELOG,
    DictStore,
    FakeEvent,
    FakeMessage,
    FakeProducer,
    Inbox,
    never,
    start,
)
from tests.unit.coordinator.test_onehop import (
    T0,
    Gate,
    one_step,
    onehop_processor,
    settle,
    tasks_for,
)


def lifecycle(producer: FakeProducer) -> list[tuple[int, str]]:
    return [(e["seq"], e["type"]) for s in producer.to("t.lifecycle") for e in s.events()]


async def local_run() -> tuple[Any, FakeProducer, DictStore, list[tuple[int, LocalResult]], int]:
    """A one-step saga started through the inbox; its result caught on its way to the lane."""
    gate, producer, store = Gate(), FakeProducer(), DictStore()
    gate.open.set()
    definition = one_step(gate.action, timeout=60)
    tasks = tasks_for(definition, producer, [T0])
    caught: list[tuple[int, LocalResult]] = []

    def lane(partition: int, item: LocalResult) -> bool:
        caught.append((partition, item))
        return True

    tasks.local = lane
    proc = onehop_processor(definition, producer, store, tasks)
    event = Inbox().event("x", start("one", "x"))
    await proc.handle(event.message.partition, [event], never)
    await settle()
    return proc, producer, store, caught, event.message.partition


async def test_a_local_result_is_applied_by_the_next_batch_and_never_crosses_the_inbox() -> None:
    proc, producer, store, caught, partition = await local_run()
    assert producer.to("t.inbox") == [], "the result went to the lane, not the inbox"
    assert [(p, item.result.ok) for p, item in caught] == [(partition, True)]
    first = SagaState.model_validate_json(store["x"])
    assert first.batch == 0 and first.last_message is not None
    producer.hold = True  # the record is not acked yet: nothing derived may leave
    before = len(producer.enqueued)
    handled = asyncio.create_task(proc.handle(partition, [caught[0][1]], never))
    await settle()
    assert [s.topic for s in producer.enqueued[before:]] == [CHANGELOG]
    assert lifecycle(producer) == [(1, "saga_started"), (2, "step_started")]
    producer.release()
    await handled
    after = SagaState.model_validate_json(store["x"])
    assert after.status == "completed" and after.batch == 1
    assert after.last_message == first.last_message, "no inbox record: the anchor stays"
    assert [o["kind"] for o in after.last_outbox] == ["event", "event"]
    assert lifecycle(producer)[2:] == [(3, "step_succeeded"), (4, "saga_completed")]


async def test_a_resend_sends_the_stored_outbox_again_unchanged() -> None:
    proc, producer, store, caught, partition = await local_run()
    await proc.handle(partition, [caught[0][1]], never)
    sent = lifecycle(producer)
    record = store["x"]
    await proc.handle(partition, [Resend("x")], never)
    assert lifecycle(producer) == sent + sent[2:], "the last batch's events, same seq"
    assert store["x"] == record, "a re-send writes nothing"


async def test_a_local_result_that_cannot_be_applied_goes_to_the_inbox() -> None:
    proc, producer, _, caught, partition = await local_run()

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug")

    proc._step = broken  # type: ignore[method-assign]
    await proc.handle(partition, [caught[0][1]], never)
    rerouted = [(s.partition, parse_inbox(s.value)) for s in producer.to("t.inbox")]
    assert [(p, type(m), m.saga_id) for p, m in rerouted] == [(partition, StepResult, "x")]


def test_batch_of_reads_the_records_own_field_whatever_the_input_holds() -> None:
    state = SagaState.model_validate_json(
        b'{"saga_id":"x","saga_type":"one","saga_version":1,"input":{"batch":99},'
        b'"steps":[],"started_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}'
    )
    assert batch_of(state.model_dump_json().encode()) is None
    state.batch = 7
    assert batch_of(state.model_dump_json().encode()) == 7
    assert batch_of(b'{"saga_id":"old"}') is None, "a record written before batch numbers"
    older = b'{"saga_id":"old","input":{"batch":123456789},"compact":false}'
    assert batch_of(older) is None, "an input key is never the record's own field"
    newer = state.model_dump_json()[:-1] + ',"added_later":1}'
    assert SagaState.model_validate_json(newer).batch == 7, "a newer version's record reads"


async def test_a_new_owner_numbers_after_the_highest_batch_and_resends_the_last_one() -> None:
    batches: dict[int, int] = {}
    recovery = Recovery(batches)

    def raw(batch: int | None) -> bytes:
        return (
            b'{"saga_id":"s","batch":' + (b"null" if batch is None else str(batch).encode()) + b"}"
        )

    waiting = asyncio.create_task(recovery.prelude(0))
    await settle()
    assert not waiting.done(), "no lane applies anything before its partition is scanned"
    entries = [(0, "a", raw(3)), (0, "b", raw(5)), (0, "c", raw(5)), (0, "d", raw(None)),
               (1, "e", raw(2))]  # fmt: skip
    await recovery.scan({0, 1, 2}, chunked(entries, 2))
    items = await waiting
    assert [(type(i), i.saga_id) for i in items] == [(Resend, "b"), (Resend, "c")]
    assert batches[0] == 6
    assert [i.saga_id for i in await recovery.prelude(1)] == ["e"] and batches[1] == 3
    assert await recovery.prelude(2) == [] and batches[2] == 0, "an empty partition"


async def test_a_revoke_abandons_lanes_waiting_for_the_scan() -> None:
    recovery = Recovery({})
    waiting = asyncio.create_task(recovery.prelude(0))
    await settle()
    recovery.reset()
    with pytest.raises(Abandoned):
        await waiting


async def test_local_items_join_the_next_batch_unacked_and_a_stopping_lane_hands_them_on() -> None:
    handled: list[list[Any]] = []
    orphans: list[Any] = []
    release = asyncio.Event()

    async def handler(partition: int, events: list[Any], stopping: Any) -> None:
        handled.append(list(events))
        if len(handled) == 2:
            while not stopping():
                await asyncio.sleep(0.01)
            raise Abandoned()
        await release.wait()

    lanes = Lanes("inbox", handler, batch_size=10, buffer=10, orphaned=orphans.extend)
    assert not lanes.put_local(0, "early"), "no lane for the partition: not held"
    record = FakeEvent(FakeMessage(b"k", b"v", 0, 1))
    lanes.dispatch(record)
    assert lanes.put_local(0, "one")
    await settle()
    release.set()
    await settle()
    assert handled[0] == [record, "one"] and record.acked
    assert lanes.put_local(0, "two")
    await settle()
    assert lanes.put_local(0, "three")  # waits behind the batch that is stopping
    await lanes.stop()
    assert handled[1] == ["two"] and orphans == ["two", "three"]
    assert not lanes.put_local(0, "late")


async def test_results_handed_back_by_a_stopped_lane_go_to_the_inbox() -> None:
    _, producer, _, caught, partition = await local_run()
    tasks = tasks_for(one_step(Gate().action), producer, [T0])
    tasks.orphaned([caught[0][1], Resend("y")])
    await settle()
    sent = producer.to("t.inbox")
    assert [(s.partition, parse_inbox(s.value).saga_id) for s in sent] == [(partition, "x")]


async def dead_letters_once_applied_from_the_inbox(
    proc: Any, producer: FakeProducer, partition: int
) -> list[tuple[str | None, str, str, str]]:
    """Apply what went to the inbox (as an inbox record); the dead letters that result."""
    rerouted = producer.to("t.inbox")
    assert rerouted, "nothing went to the inbox"
    events = [
        FakeEvent(FakeMessage(s.key, s.value, partition, 90 + i)) for i, s in enumerate(rerouted)
    ]
    await proc.handle(partition, events, never)
    return [
        (b["key"], b["source_topic"], b["error_type"], b["reason"])
        for b in (s.body() for s in producer.to("t.deadletters"))
    ]


async def test_a_local_result_for_a_saga_this_worker_lacks_ends_as_a_dead_letter() -> None:
    proc, producer, store, caught, partition = await local_run()
    del store["x"]  # e.g. deleted at the end of its retention while the step ran
    proc.forget()
    await proc.handle(partition, [caught[0][1]], never)
    letters = await dead_letters_once_applied_from_the_inbox(proc, producer, partition)
    assert letters == [("x", "t.inbox", "Rejected", "result for unknown saga 'x'")]


async def test_a_rejected_local_result_ends_as_a_dead_letter_with_its_reason() -> None:
    proc, producer, store, caught, partition = await local_run()
    marker = SagaState.model_validate_json(store["x"])  # finished and past its retention
    marker.status, marker.compact = "completed", True
    store["x"] = marker.model_dump_json().encode()
    proc.forget()
    await proc.handle(partition, [caught[0][1]], never)
    [(key, source, kind, reason)] = await dead_letters_once_applied_from_the_inbox(
        proc, producer, partition
    )
    assert (key, source, kind) == ("x", "t.inbox", "Rejected")
    assert reason.startswith("late success of step 'a' for saga 'x'")
    assert "check the participant for an effect left standing" in reason


async def test_a_batch_takes_at_most_batch_size_local_items() -> None:
    handled: list[list[Any]] = []

    async def handler(partition: int, events: list[Any], stopping: Any) -> None:
        handled.append(list(events))

    lanes = Lanes("inbox", handler, batch_size=2, buffer=10)
    lanes.open({0})
    for item in "abcde":
        assert lanes.put_local(0, item)
    await settle()
    assert handled == [["a", "b"], ["c", "d"], ["e"]]
    await lanes.stop()


async def test_local_items_of_a_batch_cancelled_at_the_stop_timeout_are_handed_on() -> None:
    orphans: list[Any] = []

    async def stuck(partition: int, events: list[Any], stopping: Any) -> None:
        await asyncio.Event().wait()  # never returns, ignores stopping

    lanes = Lanes("inbox", stuck, batch_size=10, buffer=10, orphaned=orphans.extend)
    lanes.stop_timeout = 0.05
    lanes.open({0})
    assert lanes.put_local(0, "r")
    await settle()
    await lanes.stop()
    assert orphans == ["r"], "a result whose batch never finished goes to the inbox"
