"""The shell's pure parts: deadline heap, routing, size classification, lanes, delivery."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from faust.exceptions import ProducerSendError

from coordinator._deadlines import DeadlineIndex, deadline_of, wake_of
from coordinator._delivery import (
    BATCH_BYTES,
    Abandoned,
    Backoff,
    Record,
    deliver,
    is_too_large,
    is_transient,
)
from coordinator._lanes import Lanes
from coordinator._routing import partition_for, saga_table
from coordinator._state import Pending, SagaState
from tests.unit.coordinator.shell_kit import FakeEvent, FakeMessage, FakeProducer

# -- deadlines ----------------------------------------------------------------------------


def test_due_hands_out_each_passed_deadline_once() -> None:
    index = DeadlineIndex()
    index.set("a", 0, 10.0)
    index.set("b", 1, 20.0)
    assert index.due(5.0) == []
    assert index.due(15.0) == [("a", 10.0, 0)]
    assert index.due(15.0) == []
    assert index.due(25.0) == [("b", 20.0, 1)]


def test_a_replaced_deadline_fires_only_at_its_new_time() -> None:
    index = DeadlineIndex()
    index.set("a", 0, 10.0)
    index.set("a", 0, 30.0)
    assert index.due(20.0) == []
    assert index.due(30.0) == [("a", 30.0, 0)]
    index.set("a", 0, 40.0)
    index.set("a", 0, None)  # the saga waits for nothing any more
    assert index.due(100.0) == []


def test_a_failed_send_is_restored_unless_the_saga_moved_on() -> None:
    index = DeadlineIndex()
    index.set("a", 0, 10.0)
    [(saga, at, partition)] = index.due(10.0)
    index.restore(saga, at, partition)
    assert index.get("a") == 10.0
    [entry] = index.due(10.0)
    index.set("a", 0, 50.0)  # a transition re-indexed it while the timer was sent
    index.restore(*entry)
    assert index.get("a") == 50.0


def test_re_indexing_the_same_deadline_after_it_fired_arms_it_again() -> None:
    index = DeadlineIndex()
    index.set("a", 0, 10.0)
    assert index.due(10.0)
    index.set("a", 0, 10.0)  # the timer's transition changed nothing (early timer)
    assert index.due(10.0) == [("a", 10.0, 0)]


def record(
    saga_id: str,
    status: str,
    deadline: datetime | None,
    expires_at: datetime | None = None,
) -> bytes:
    pending = None
    if deadline is not None:
        pending = Pending(phase="action", step=0, attempt=1, waiting="result", deadline=deadline)
    state = SagaState(
        saga_id=saga_id,
        saga_type="t",
        saga_version=1,
        status=status,  # type: ignore[arg-type]
        input={},
        steps=[],
        pending=pending,
        started_at=deadline or AT0,
        updated_at=deadline or AT0,
        expires_at=expires_at,
    )
    return state.model_dump_json().encode()


AT0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_rebuild_drops_revoked_partitions_and_takes_the_table_as_truth() -> None:
    index = DeadlineIndex()
    index.set("gone", 3, 10.0)
    index.set("stale", 0, 10.0)
    at = AT0
    await index.rebuild(
        [0, 1],
        [
            (0, record("stale", "running", at)),
            (1, record("new", "running", at)),
            (1, record("done", "completed", None)),
            (1, record("resting", "compensation_failed", at)),
            (2, record("not-ours", "running", at)),
        ],
    )
    assert {s for s, _, _ in index.due(at.timestamp())} == {"stale", "new"}
    assert len(index) == 0


@pytest.mark.parametrize(
    ("status", "deadline", "expires"),
    [
        ("running", AT0, None),
        ("compensating", AT0, None),
        ("parked", AT0, None),
        ("compensation_failed", AT0, None),
        ("completed", None, AT0),
        ("compensated", None, None),
        ("running", None, None),
    ],
)
def test_the_rebuilds_light_parse_agrees_with_wake_at(
    status: str, deadline: datetime | None, expires: datetime | None
) -> None:
    raw = record("s", status, deadline, expires)
    wake = wake_of(raw)
    assert (wake.saga_id, wake.at()) == ("s", deadline_of(SagaState.model_validate_json(raw)))


async def test_a_rebuild_yields_to_the_loop_and_the_lanes_newer_deadline_wins() -> None:
    index = DeadlineIndex()
    old, new = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    # the rebuild's copy of the table is older than what the lanes store meanwhile
    table = [(0, record(f"s{i}", "running", old)) for i in range(10)]
    ran_between: list[int] = []

    async def lanes() -> None:
        await asyncio.sleep(0)  # runs once the rebuild yields (after its first chunk)
        ran_between.append(len(index))
        index.set("s1", 0, new.timestamp())  # indexed already: the lane replaces it
        index.set("s7", 0, new.timestamp())  # not yet read by the rebuild
        index.set("s8", 0, None)  # finished meanwhile: waits for nothing

    await asyncio.gather(index.rebuild([0], table, chunk=3), lanes())
    assert ran_between and 0 < ran_between[0] < 10  # the loop ran mid-rebuild
    assert index.get("s1") == new.timestamp()
    assert index.get("s7") == new.timestamp()  # the stale record read later lost
    assert index.get("s8") is None
    assert index.get("s9") == old.timestamp()  # untouched sagas come from the table


async def test_a_deadline_fired_during_a_rebuild_is_not_armed_again_by_it() -> None:
    index = DeadlineIndex()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    index.set("a", 0, at.timestamp())  # held before the rebalance (partition kept)
    table = [(0, record(f"s{i}", "running", at)) for i in range(6)] + [
        (0, record("a", "running", at))
    ]
    fired: list[str] = []

    async def timer() -> None:
        await asyncio.sleep(0)
        fired.extend(s for s, _, _ in index.due(at.timestamp()))

    await asyncio.gather(index.rebuild([0], table, chunk=2), timer())
    assert "a" in fired
    assert "a" not in {s for s, _, _ in index.due(at.timestamp())}  # fired once


async def test_a_newer_rebuild_ends_an_older_one() -> None:
    index = DeadlineIndex()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    first = asyncio.ensure_future(
        index.rebuild([0, 1], [(1, record(f"s{i}", "running", at)) for i in range(100)], chunk=2)
    )
    await asyncio.sleep(0)
    assert await index.rebuild([0], [(0, record("kept", "running", at))])
    assert await first is False
    assert {s for s, _, _ in index.due(at.timestamp())} == {"kept"}


def test_the_heap_stays_bounded_when_deadlines_keep_moving() -> None:
    index = DeadlineIndex()
    for i in range(10_000):
        index.set("a", 0, float(i))
    assert len(index._heap) <= 2 * len(index) + 1024
    assert index.due(1e9) == [("a", 9999.0, 0)]


# -- routing ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 4, 8, 64])
def test_partition_for_is_kafkas_default_partitioner(n: int) -> None:
    partitions = list(range(n))
    for i in range(200):
        saga_id = f"order-{i}"
        assert partition_for(saga_id, n) == DefaultPartitioner()(saga_id.encode(), partitions, [])


def test_table_keys_are_the_raw_saga_id_so_web_routing_matches_the_inbox() -> None:
    import faust

    app = faust.App("route-test", broker="kafka://127.0.0.1:1", datadir=tempfile.mkdtemp())
    table = saga_table(app, "saga-state", 8)
    assert app.router._get_serialized_key(table, "order-42") == b"order-42"
    assert table.changelog_topic.prepare_key("order-42", None)[0] == b"order-42"


# -- classification -----------------------------------------------------------------------


def test_a_record_too_large_is_never_transient() -> None:
    too_large = MessageSizeTooLargeError("1048600 bytes")
    wrapped = ProducerSendError("Error while sending")
    wrapped.__cause__ = too_large
    assert is_too_large(too_large) and is_too_large(wrapped)
    assert not is_transient(too_large) and not is_transient(wrapped)
    down = ProducerSendError("Error while sending")
    down.__cause__ = KafkaConnectionError("no broker")
    assert is_transient(down) and not is_too_large(down)
    assert not is_transient(ValueError("bug"))


class Outstanding(FakeProducer):
    """Acknowledges batches only when told, counting how many wait per partition."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = True
        self.most: dict[tuple[str, int], int] = {}

    async def send_batch(self, topic: str, partition: int, records: Any) -> Any:
        fut = await super().send_batch(topic, partition, records)
        waiting = sum(
            1
            for _, batch in self._held
            if (batch[0].topic, batch[0].partition) == (topic, partition)
        )
        self.most[topic, partition] = max(self.most.get((topic, partition), 0), waiting)
        return fut


async def settle(producer: FakeProducer, task: asyncio.Future[Any]) -> Any:
    while not task.done():
        for _ in range(5):
            await asyncio.sleep(0)
        producer.release()
        producer.hold = isinstance(producer, Outstanding)
    return task.result()


async def test_a_later_record_never_overtakes_an_earlier_one_whose_batch_failed() -> None:
    producer = Outstanding()
    producer.failures = {"t": 1}  # the partition's first batch fails
    big = b"x" * (BATCH_BYTES // 2)  # two records per batch at most
    records = [Record("t", b"k", big + f"{i}".encode(), partition=1) for i in range(5)]
    records += [Record("u", b"k", f"u{i}".encode(), partition=1) for i in range(3)]
    backoff = Backoff(lambda: False, first=0.001)
    task = asyncio.ensure_future(deliver(producer, records, backoff, what="t"))
    acks = await settle(producer, task)
    assert [s.value[-1:] for s in producer.to("t")] == [b"0", b"1", b"2", b"3", b"4"]
    assert [s.value for s in producer.to("u")] == [b"u0", b"u1", b"u2"]
    # the failed batch was sent again before anything after it was even enqueued
    assert [s.value[-1:] for s in producer.enqueued if s.topic == "t"][:2] == [b"0", b"0"]
    assert producer.most == {("t", 1): 1, ("u", 1): 1}  # one unacknowledged batch at a time
    assert [(a.topic, a.offset) for a in acks] == [("t", i) for i in range(5)] + [
        ("u", i) for i in range(3)
    ]


async def test_a_partition_whose_sends_fail_does_not_hold_the_others() -> None:
    producer = FakeProducer()
    producer.failures = {"down": 10**6}
    stop = False
    records = [Record("down", b"k", b"1", partition=0), Record("up", b"k", b"2", partition=0)]
    task = asyncio.ensure_future(
        deliver(producer, records, Backoff(lambda: stop, first=0.001), what="t")
    )
    for _ in range(50):
        await asyncio.sleep(0.001)
    assert [s.value for s in producer.sent] == [b"2"] and not task.done()
    stop = True
    with pytest.raises(Abandoned):
        await task


async def test_a_batch_refused_as_too_large_is_re_sent_one_record_at_a_time() -> None:
    class Refusing(FakeProducer):
        async def send_batch(self, topic: str, partition: int, records: Any) -> Any:
            if len(records) > 1:
                raise MessageSizeTooLargeError("batch over max.message.bytes")
            return await super().send_batch(topic, partition, records)

    producer = Refusing()
    records = [Record("t", b"k", f"{i}".encode()) for i in range(3)]
    await deliver(producer, records, Backoff(lambda: False, first=0.001), what="t")
    assert [s.value for s in producer.sent] == [b"0", b"1", b"2"]


async def test_deliver_gives_up_only_when_the_partition_is_taken_away() -> None:
    producer = FakeProducer()
    producer.failures = {"t": 10**6}
    with pytest.raises(Abandoned):
        await deliver(producer, [Record("t", b"k", b"v")], Backoff(lambda: True), what="test")


async def test_deliver_raises_a_bug_instead_of_retrying_it() -> None:
    class Broken(FakeProducer):
        async def send_batch(self, *args: Any) -> Any:
            raise TypeError("bug")

    with pytest.raises(TypeError):
        await deliver(Broken(), [Record("t", b"k", b"v")], Backoff(lambda: False), what="test")


# -- lanes --------------------------------------------------------------------------------


def event(partition: int, offset: int) -> FakeEvent:
    return FakeEvent(FakeMessage(b"k", b"v", partition, offset))


async def test_a_stuck_partition_does_not_stop_the_others() -> None:
    handled: list[tuple[int, list[int]]] = []
    release = asyncio.Event()

    async def handler(partition: int, events: list[Any], stopping: Any) -> None:
        if partition == 0:
            await release.wait()
        handled.append((partition, [e.message.offset for e in events]))

    lanes = Lanes("test", handler, batch_size=10, buffer=100)
    stuck, free = [event(0, 1), event(0, 2)], [event(1, 1), event(1, 2), event(1, 3)]
    for e in [*stuck, *free]:
        lanes.dispatch(e)
    for _ in range(20):
        await asyncio.sleep(0)
    assert handled == [(1, [1, 2, 3])] and all(e.acked for e in free)
    assert not any(e.acked for e in stuck)
    release.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert all(e.acked for e in stuck)
    await lanes.stop()


async def test_a_full_lane_pauses_its_partition_and_resumes_when_drained() -> None:
    release = asyncio.Event()
    calls: list[str] = []

    async def handler(partition: int, events: list[Any], stopping: Any) -> None:
        await release.wait()

    lanes = Lanes(
        "test",
        handler,
        batch_size=2,
        buffer=4,
        pause=lambda p: calls.append(f"pause {p}"),
        resume=lambda p: calls.append(f"resume {p}"),
    )
    for offset in range(6):
        lanes.dispatch(event(2, offset))
    assert calls == ["pause 2"]
    release.set()
    for _ in range(50):
        await asyncio.sleep(0)
    assert calls == ["pause 2", "resume 2"]
    await lanes.stop()


async def test_stopping_lanes_hands_back_what_was_not_acked() -> None:
    forgotten: list[Any] = []

    async def handler(partition: int, events: list[Any], stopping: Any) -> None:
        while not stopping():
            await asyncio.sleep(0.01)
        raise Abandoned()

    lanes = Lanes("test", handler, batch_size=1, buffer=10, forget=forgotten.extend)
    events = [event(0, 1), event(0, 2)]
    for e in events:
        lanes.dispatch(e)
    await asyncio.sleep(0)
    await lanes.stop()
    assert forgotten == events and not any(e.acked for e in events)
    assert lanes.lanes == {}


async def test_a_handler_bug_is_retried_not_skipped() -> None:
    attempts: list[int] = []

    async def handler(partition: int, events: list[Any], stopping: Any) -> None:
        attempts.append(len(attempts))
        if len(attempts) == 1:
            raise RuntimeError("bug")

    lanes = Lanes("test", handler, batch_size=5, buffer=10)
    e = event(0, 1)
    lanes.dispatch(e)
    for _ in range(100):
        if e.acked:
            break
        await asyncio.sleep(0.01)
    assert e.acked and len(attempts) == 2
    await lanes.stop()


async def test_a_lane_reads_in_offset_order_and_seeks_back_over_a_gap() -> None:
    handled: list[int] = []
    seeks: list[tuple[int, int]] = []
    forgotten: list[int] = []

    async def handler(partition: int, events: list[Any], stopping: Any) -> None:
        handled.extend(e.message.offset for e in events)

    async def start_offset(partition: int) -> int:
        return 10  # the committed offset

    async def seek(partition: int, offset: int) -> None:
        seeks.append((partition, offset))

    lanes = Lanes(
        "test",
        handler,
        batch_size=10,
        buffer=100,
        start_offset=start_offset,
        seek=seek,
        forget=lambda events: forgotten.extend(e.message.offset for e in events),
    )
    for offset in (12, 13):  # 10 and 11 were skipped by Faust
        lanes.dispatch(event(0, offset))
    for _ in range(20):
        await asyncio.sleep(0)
    assert handled == [] and seeks == [(0, 10)] and forgotten == [12, 13]
    for offset in (9, 10, 11, 12, 13):  # re-read after the seek (9: handled before)
        lanes.dispatch(event(0, offset))
    for _ in range(20):
        await asyncio.sleep(0)
    assert handled == [10, 11, 12, 13] and 9 in forgotten
    await lanes.stop()


async def test_a_lane_seeks_again_until_the_re_read_arrives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust can drop the re-read (its read offset moved on with a batch fetched before the
    seek): the lane seeks again, and again, until the offset it expects arrives."""
    import coordinator._lanes as lanes_module

    monkeypatch.setattr(lanes_module, "SEEK_AGAIN", 0.05)
    handled: list[int] = []
    seeks: list[int] = []

    async def handler(partition: int, events: list[Any], stopping: Any) -> None:
        handled.extend(e.message.offset for e in events)

    async def start_offset(partition: int) -> int:
        return 72

    async def seek(partition: int, offset: int) -> None:
        seeks.append(offset)

    lanes = Lanes(
        "test",
        handler,
        batch_size=10,
        buffer=100,
        start_offset=start_offset,
        seek=seek,
        forget=lambda events: None,
    )
    lanes.dispatch(event(0, 74))  # 72 and 73 skipped; then the stale batch goes on:
    await asyncio.sleep(0.01)
    lanes.dispatch(event(0, 75))  # within the throttle: dropped, no second seek yet
    await asyncio.sleep(0.01)
    assert seeks == [72] and handled == []
    for _ in range(100):  # Faust dropped the re-read 72, 73: nothing arrives
        if len(seeks) >= 3:
            break
        await asyncio.sleep(0.02)
    assert seeks[:3] == [72, 72, 72], "the watchdog seeks again while nothing is re-read"
    for offset in (72, 73, 74, 75):  # the re-read finally arrives
        lanes.dispatch(event(0, offset))
    for _ in range(100):
        if handled == [72, 73, 74, 75]:
            break
        await asyncio.sleep(0.01)
    assert handled == [72, 73, 74, 75]
    settled = len(seeks)
    await asyncio.sleep(0.2)
    assert len(seeks) == settled, "no more seeks once the expected offset arrived"
    await lanes.stop()


async def test_a_partition_all_of_whose_records_faust_skipped_is_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker died before its first commit; its successor skipped the first fetch of
    every partition (seen in CI) and no later record arrived on partition 0: no event at
    all, the consumer past them. The lane opened at the assignment notices
    (``position``) and seeks back."""
    import coordinator._lanes as lanes_module

    monkeypatch.setattr(lanes_module, "SEEK_AGAIN", 0.05)
    handled: list[int] = []
    seeks: list[tuple[int, int]] = []
    position = {0: 14, 1: 9}  # partition 1: nothing skipped, everything read

    async def handler(partition: int, events: list[Any], stopping: Any) -> None:
        handled.extend(e.message.offset for e in events)

    async def start_offset(partition: int) -> int:
        return 0 if partition == 0 else 9  # partition 0: never committed

    async def seek(partition: int, offset: int) -> None:
        seeks.append((partition, offset))
        position[partition] = offset

    async def fetch_position(partition: int) -> int | None:
        return position[partition]

    lanes = Lanes(
        "inbox",
        handler,
        batch_size=100,
        buffer=100,
        start_offset=start_offset,
        seek=seek,
        position=fetch_position,
        forget=lambda events: None,
    )
    lanes.open({0, 1})
    for _ in range(100):
        if seeks:
            break
        await asyncio.sleep(0.01)
    # (it seeks again while nothing is re-read: more than once on a loaded machine)
    assert seeks and set(seeks) == {(0, 0)}, "the idle lane saw the consumer past its records"
    for offset in range(14):  # the re-read
        lanes.dispatch(event(0, offset))
    for _ in range(100):
        if len(handled) == 14:
            break
        await asyncio.sleep(0.01)
    assert handled == list(range(14))
    settled = len(seeks)
    position[0] = 14
    await asyncio.sleep(0.2)
    assert len(seeks) == settled, "no seek once read up to the consumer's position"
    await lanes.stop()


async def test_an_idle_lane_keeps_seeking_until_what_the_consumer_passed_arrives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A seek's re-read can be dropped too: the lane never takes offsets it could not
    read as empty, it seeks again (quietly after ``WATCH_SEEKS``) until they come."""
    import coordinator._lanes as lanes_module

    monkeypatch.setattr(lanes_module, "SEEK_AGAIN", 0.02)
    seeks: list[int] = []
    handled: list[int] = []

    async def handler(partition: int, events: list[Any], stopping: Any) -> None:
        handled.extend(e.message.offset for e in events)

    async def start_offset(partition: int) -> int:
        return 5

    async def seek(partition: int, offset: int) -> None:
        seeks.append(offset)

    async def fetch_position(partition: int) -> int | None:
        return 6  # past offset 5, which never reaches the lane

    lanes = Lanes(
        "inbox",
        handler,
        batch_size=10,
        buffer=100,
        start_offset=start_offset,
        seek=seek,
        position=fetch_position,
        forget=lambda events: None,
    )
    lanes.open({0})
    for _ in range(300):
        if len(seeks) > lanes_module.WATCH_SEEKS:
            break
        await asyncio.sleep(0.01)
    assert set(seeks) == {5} and len(seeks) > lanes_module.WATCH_SEEKS
    assert lanes.lanes[0].expected == 5, "never going on past what it could not read"
    lanes.dispatch(event(0, 5))  # a seek's re-read finally arrives
    for _ in range(100):
        if handled:
            break
        await asyncio.sleep(0.01)
    assert handled == [5]
    settled = len(seeks)
    await asyncio.sleep(0.2)
    assert len(seeks) == settled, "read up to the consumer's position: no more seeks"
    await lanes.stop()


async def test_a_step_topic_lane_is_not_opened_ahead_of_its_events() -> None:
    async def handler(partition: int, events: list[Any], stopping: Any) -> None:
        return None

    lanes = Lanes("steps", handler, batch_size=2, buffer=10, strict=False)
    lanes.open({0, 1})
    assert lanes.lanes == {}


async def test_a_slow_step_holds_its_own_slot_not_the_partition() -> None:
    """Step topics: up to batch_size at once, one event per call, acked in offset order."""
    release = asyncio.Event()
    started: list[int] = []
    running = 0
    most = 0

    async def handler(partition: int, events: list[Any], stopping: Any) -> None:
        nonlocal running, most
        [e] = events
        started.append(e.message.offset)
        running += 1
        most = max(most, running)
        if e.message.offset == 0:
            await release.wait()
        else:
            await asyncio.sleep(0)
        running -= 1

    lanes = Lanes("steps", handler, batch_size=2, buffer=100, strict=False)
    events = [event(0, offset) for offset in range(5)]
    for e in events:
        lanes.dispatch(e)
    for _ in range(50):
        await asyncio.sleep(0)
    assert started == [0, 1, 2, 3, 4]  # the others went on while offset 0 was slow
    assert most == 2  # never more than batch_size at once
    assert not any(e.acked for e in events)  # acks stay in offset order behind the head
    release.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert all(e.acked for e in events)
    await lanes.stop()


async def test_a_stopped_step_lane_returns_what_it_did_not_ack() -> None:
    async def handler(partition: int, events: list[Any], stopping: Any) -> None:
        if events[0].message.offset == 0:
            await asyncio.Event().wait()  # never finishes

    forgotten: list[Any] = []
    lanes = Lanes(
        "steps",
        handler,
        batch_size=4,
        buffer=100,
        strict=False,
        forget=forgotten.extend,
        stop_timeout=0.05,
    )
    events = [event(1, offset) for offset in range(3)]
    for e in events:
        lanes.dispatch(e)
    for _ in range(20):
        await asyncio.sleep(0)
    await lanes.stop()
    assert not any(e.acked for e in events)
    assert forgotten == events  # delivered again to the next owner


async def test_a_gap_still_there_right_after_a_seek_back_is_real() -> None:
    """Offsets a consumer never sees (a transaction marker, compaction): after one seek
    back the same record comes first again, and the lane goes on from it."""
    handled: list[int] = []
    seeks: list[int] = []

    async def handler(partition: int, events: list[Any], stopping: Any) -> None:
        handled.extend(e.message.offset for e in events)

    async def start_offset(partition: int) -> int:
        return 10

    async def seek(partition: int, offset: int) -> None:
        seeks.append(offset)

    lanes = Lanes(
        "test",
        handler,
        batch_size=10,
        buffer=100,
        start_offset=start_offset,
        seek=seek,
        forget=lambda events: None,
    )
    for offset in (12, 13):  # 10 and 11 hold no readable record
        lanes.dispatch(event(0, offset))
    for _ in range(20):
        await asyncio.sleep(0)
    assert seeks == [10] and handled == []
    for offset in (12, 13, 14):  # read again from 10 after the seek: 12 comes first again
        lanes.dispatch(event(0, offset))
    for _ in range(20):
        await asyncio.sleep(0)
    assert handled == [12, 13, 14] and seeks == [10]
    await lanes.stop()


# -- the consumer's direct path ----------------------------------------------------------


class _Stopped(Exception):
    pass


class _DrainConsumer:
    """What ``drain`` reads of Faust's consumer: fetches replayed from a list."""

    consumer_stopped_errors = (_Stopped,)

    def __init__(self, fetches: list[list[tuple[Any, FakeMessage]]]) -> None:
        from types import SimpleNamespace

        self.fetches = fetches
        self._stopped = asyncio.Event()
        self._read_offset: dict[Any, int | None] = {}
        self.should_stop = False
        self.app = SimpleNamespace(
            monitor=SimpleNamespace(stream_inbound_time={}), direct_closed=False, pausing=set()
        )
        self.transport = SimpleNamespace(app=SimpleNamespace(should_stop=True))
        self.paused: list[list[Any]] = []  # pause_partitions calls, in order

    def pause_partitions(self, tps: list[Any]) -> None:
        self.paused.append(sorted(tps))

    async def getmany(self, timeout: float) -> Any:
        if not self.fetches:
            raise _Stopped()
        for tp, message in self.fetches.pop(0):
            yield tp, message
        self.paused.append(["fetch done"])


async def test_direct_records_reach_the_lane_unfiltered_and_others_take_faust_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No read-offset filter on the direct path: a re-read after a seek back reaches the
    lane (Faust's filter dropped it when its read offset had moved on)."""
    from faust.types import TP

    import coordinator._faust_app as faust_app

    inbox0, inbox1, other = TP("inbox", 0), TP("inbox", 1), TP("other", 0)
    faust_path: list[int] = []

    async def faust_own(consumer: Any, tp: Any, message: FakeMessage) -> None:
        faust_path.append(message.offset)

    monkeypatch.setattr(faust_app, "_faust_path", faust_own)

    def msg(tp: Any, offset: int) -> tuple[Any, FakeMessage]:
        return tp, FakeMessage(b"k", b"v", tp.partition, offset, tp.topic)

    consumer = _DrainConsumer(
        [
            [msg(inbox0, 74), msg(inbox1, 5), msg(inbox0, 75), msg(other, 3), msg(inbox1, 6)],
            [msg(inbox0, 72), msg(inbox0, 73)],  # the re-read after a seek back to 72
        ]
    )
    got: list[tuple[int, int]] = []
    fetcher = type("Fetcher", (), {"_stopped": asyncio.Event()})()
    await faust_app.drain(
        consumer, fetcher, {"inbox": lambda m: got.append((m.partition, m.offset))}
    )
    assert got == [(0, 74), (1, 5), (0, 75), (1, 6), (0, 72), (0, 73)]
    assert faust_path == [3], "records of other topics take Faust's own path"
    assert consumer._read_offset[inbox0] == 73


async def test_a_pause_takes_effect_after_the_fetch_and_a_revoke_closes_the_direct_path() -> None:
    """Paused at once, Faust's getmany would drop the rest of the fetch's records of the
    partition (a hole); while a revoke stops the lanes, nothing more is handed over."""
    from faust.types import TP

    import coordinator._faust_app as faust_app

    inbox0 = TP("inbox", 0)

    def msg(offset: int) -> tuple[Any, FakeMessage]:
        return inbox0, FakeMessage(b"k", b"v", 0, offset, "inbox")

    consumer = _DrainConsumer([[msg(1), msg(2), msg(3)], [msg(4), msg(5)]])
    got: list[int] = []

    def lane(message: FakeMessage) -> None:
        got.append(message.offset)
        if message.offset == 1:
            consumer.app.pausing.add(inbox0)  # the lane's buffer is full
        if message.offset == 4:
            consumer.app.direct_closed = True  # a revoke began

    fetcher = type("Fetcher", (), {"_stopped": asyncio.Event()})()
    await faust_app.drain(consumer, fetcher, {"inbox": lane})
    assert got == [1, 2, 3, 4], "the whole fetch reached the lane; 5 came after the revoke"
    assert consumer.paused[:2] == [["fetch done"], [inbox0]], "paused after the fetch"


async def test_records_handed_over_while_lanes_stop_start_no_lane() -> None:
    """A record handed over during ``Lanes.stop`` (a rebalance) creates no orphan lane."""
    release = asyncio.Event()
    handled: list[int] = []

    async def handler(partition: int, events: list[Any], stopping: Any) -> None:
        await release.wait()
        handled.extend(e.message.offset for e in events)

    lanes = Lanes("test", handler, batch_size=10, buffer=100)
    lanes.dispatch(event(0, 1))
    await asyncio.sleep(0.01)
    stopping = asyncio.ensure_future(lanes.stop())
    await asyncio.sleep(0.01)
    lanes.dispatch(event(0, 2))  # handed over during the stop
    release.set()
    await stopping
    await asyncio.sleep(0.02)
    assert handled == [1] and lanes.lanes == {}
    lanes.dispatch(event(0, 3))  # after the rebalance: lanes open again
    await asyncio.sleep(0.02)
    assert handled == [1, 3]
    await lanes.stop()


async def test_an_accepted_gap_is_passed_to_the_commit_and_a_failing_position_read_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import coordinator._lanes as lanes_module

    monkeypatch.setattr(lanes_module, "SEEK_AGAIN", 0.02)
    handled: list[int] = []
    gaps: list[tuple[int, int, int]] = []
    asked = 0

    async def handler(partition: int, events: list[Any], stopping: Any) -> None:
        handled.extend(e.message.offset for e in events)

    async def start_offset(partition: int) -> int:
        nonlocal asked
        asked += 1
        if asked == 1:
            raise RuntimeError("broker away")
        return 10

    async def seek(partition: int, offset: int) -> None:
        return None

    async def gap(partition: int, first: int, last: int) -> None:
        gaps.append((partition, first, last))

    lanes = Lanes(
        "test",
        handler,
        batch_size=10,
        buffer=100,
        start_offset=start_offset,
        seek=seek,
        gap=gap,
        forget=lambda events: None,
    )
    lanes.dispatch(event(0, 12))
    for _ in range(50):
        if asked >= 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.02)
    lanes.dispatch(event(0, 12))  # read again from 10 after the seek: 12 first again
    for _ in range(50):
        if handled:
            break
        await asyncio.sleep(0.01)
    assert handled == [12] and gaps == [(0, 10, 11)]
    await lanes.stop()
