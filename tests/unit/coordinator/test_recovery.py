"""What a new owner of an inbox partition re-sends, and how batches are numbered
(coordinator._local.Recovery).

The rules: each partition is released to its lane as soon as it is scanned, not after
every held partition; a lane that stops cleanly leaves a sent mark, and a new owner
re-sends the last batch only when the table holds a batch numbered above the mark; a
newer owner's batch numbers outnumber whatever a stale writer adds after it took over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from coordinator._delivery import Abandoned
from coordinator._lanes import Lanes
from coordinator._local import EPOCH, Recovery, Resend, mark_of, owner_epoch, sent_mark
from coordinator._messages import TimerFired
from coordinator._routing import partition_for
from coordinator._state import SagaState
from coordinator._tablestore import chunked
from tests.unit.coordinator.shell_kit import PARTITIONS, FakeProducer, Inbox, never, start
from tests.unit.coordinator.test_local import local_run
from tests.unit.coordinator.test_onehop import settle


def record(batch: int | None) -> bytes:
    """A stored saga record's tail, as ``batch_of`` reads it."""
    return b'{"saga_id":"s","batch":' + (b"null" if batch is None else str(batch).encode()) + b"}"


def resent(items: list[Any]) -> list[str]:
    assert all(isinstance(i, Resend) for i in items)
    return [i.saga_id for i in items]


class Table:
    """A partition's stored records and sent mark, as the scan reads them."""

    def __init__(self) -> None:
        self.records: dict[int, dict[str, int | None]] = {}
        self.marks: dict[int, bytes] = {}

    def write(self, partition: int, batch: int | None, *saga_ids: str) -> None:
        self.records.setdefault(partition, {}).update(dict.fromkeys(saga_ids, batch))

    def entries(self, held: set[int]) -> Iterator[tuple[int, str, bytes]]:
        for partition in sorted(held):
            for saga_id, batch in self.records.get(partition, {}).items():
                yield partition, saga_id, record(batch)

    def mark(self, partition: int) -> bytes | None:
        return self.marks.get(partition)


async def take_over(
    table: Table, held: set[int], generation: int
) -> tuple[Recovery, dict[int, int]]:
    """A new owner's assignment: scan, then every lane's prelude."""
    batches: dict[int, int] = {}
    recovery = Recovery(batches)
    await recovery.scan(held, chunked(table.entries(held)), table.mark, generation=generation)
    return recovery, batches


# -- per-partition scan (review-local #4) ------------------------------------------------


async def test_a_lane_is_released_once_its_own_partition_is_scanned() -> None:
    recovery = Recovery({})
    first = asyncio.create_task(recovery.prelude(0))
    second = asyncio.create_task(recovery.prelude(1))
    await settle()
    seen: list[tuple[bool, bool]] = []

    def entries() -> Iterator[tuple[int, str, bytes]]:
        yield 0, "a", record(4)
        yield 0, "b", record(7)
        for i in range(20):  # a big partition 1, still being read
            seen.append((first.done(), second.done()))
            yield 1, f"c{i}", record(3)

    await recovery.scan({0, 1}, chunked(entries(), 1))
    assert seen[-1] == (True, False), "partition 0 went ahead while partition 1 was read"
    assert resent(first.result()) == ["b"]
    assert resent(await second) == [f"c{i}" for i in range(20)]


async def test_a_revoke_during_the_scan_abandons_the_lanes_still_waiting() -> None:
    recovery = Recovery({})
    done = asyncio.create_task(recovery.prelude(0))
    waiting = asyncio.create_task(recovery.prelude(1))
    await settle()

    def entries() -> Iterator[tuple[int, str, bytes]]:
        yield 0, "a", record(1)
        for i in range(10):
            yield 1, f"b{i}", record(1)
        recovery.reset()  # a revoke while partition 1 is read
        yield 1, "c", record(1)

    await recovery.scan({0, 1}, chunked(entries(), 1))
    assert resent(await done) == ["a"]
    try:
        await waiting
        raise AssertionError("a lane of a revoked assignment was released")
    except Abandoned:
        pass


async def test_a_lane_is_ready_once_its_prelude_batch_is_done_and_never_if_abandoned() -> None:
    recovery, ready = Recovery({}), []
    handled: list[tuple[list[Any], list[int]]] = []

    async def handler(partition: int, events: list[Any], stopping: Any) -> None:
        handled.append((list(events), list(ready)))

    lanes = Lanes("inbox", handler, batch_size=10, buffer=10, prelude=recovery.prelude,
                  ready=ready.append)  # fmt: skip
    lanes.open({0, 1})
    await settle()
    assert ready == [], "waiting for the scan"
    await recovery.scan({0, 1}, chunked([(0, "a", record(5))]), generation=6)
    await settle()
    assert [(resent(events), before) for events, before in handled] == [(["a"], [])]
    assert sorted(ready) == [0, 1]
    await lanes.stop()
    recovery.reset()  # the next assignment, revoked before its scan
    lanes.open({2})
    await settle()
    recovery.reset()
    await lanes.stop()
    assert sorted(ready) == [0, 1], "an abandoned lane never becomes ready"


# -- sent marks (review-local #3) --------------------------------------------------------


async def test_a_last_batch_the_mark_vouches_for_is_not_re_sent() -> None:
    table = Table()
    table.write(0, 5, "a", "b")
    table.write(1, 5, "c")
    table.marks[0] = sent_mark(5)  # partition 0 stopped cleanly after batch 5
    table.marks[1] = sent_mark(4)  # partition 1's batch 5 came after its mark
    recovery, batches = await take_over(table, {0, 1}, generation=0)
    assert await recovery.prelude(0) == []
    assert resent(await recovery.prelude(1)) == ["c"]
    assert batches == {0: 6, 1: 6}


async def test_a_lane_that_stopped_cleanly_marks_what_it_wrote_and_what_it_re_sent() -> None:
    table = Table()
    table.write(0, 5, "a")  # marked already
    table.marks[0] = sent_mark(5)
    table.write(1, 3, "b")  # re-sent by the prelude
    table.write(2, 2, "c")  # this owner writes batches after it
    table.write(3, 2, "d")  # its lane is abandoned mid-batch
    recovery, batches = await take_over(table, {0, 1, 2, 3}, generation=0)
    for partition in range(4):
        await recovery.prelude(partition)
    batches[2] += 2  # two batches written (numbers 3 and 4)
    batches[3] += 1
    assert recovery.sent_marks({0, 1, 2}) == {1: 3, 2: 4}
    assert recovery.sent_marks({0, 1, 2}) == {}, "marks are computed once per revoke"


async def test_a_batch_written_after_a_clean_stop_is_re_sent_after_a_crash() -> None:
    table = Table()
    table.write(0, 5, "a")
    table.marks[0] = sent_mark(5)  # a clean stop
    recovery, batches = await take_over(table, {0}, generation=0)
    assert await recovery.prelude(0) == []
    table.write(0, batches[0], "b")  # batch 6: written, then SIGKILL before its sends
    recovery, _ = await take_over(table, {0}, generation=0)
    assert resent(await recovery.prelude(0)) == ["b"]


def test_an_unreadable_mark_vouches_for_nothing() -> None:
    assert mark_of(sent_mark(12)) == 12
    assert mark_of(None) == -1
    assert mark_of(b"garbage") == -1
    assert mark_of(b'{"sent":"12"}') == -1


async def test_only_a_lane_that_finished_every_batch_it_began_stops_drained() -> None:
    release = asyncio.Event()
    handled: list[list[Any]] = []

    async def handler(partition: int, events: list[Any], stopping: Any) -> None:
        handled.append(list(events))
        if partition == 1:  # stuck in a batch until told to stop: abandoned
            while not stopping():
                await asyncio.sleep(0.01)
            raise Abandoned()
        if partition == 2:
            await release.wait()  # never released: cancelled at the stop timeout

    async def prelude(partition: int) -> list[Any]:
        if partition == 3:
            await asyncio.Event().wait()  # its scan never comes
        return []

    lanes = Lanes("inbox", handler, batch_size=10, buffer=10, prelude=prelude)
    lanes.stop_timeout = 0.05
    lanes.open({0, 1, 2, 3})
    for partition in (0, 1, 2):
        assert lanes.put_local(partition, f"r{partition}")
    await settle()
    assert len(handled) == 3
    assert await lanes.stop() == {0}


# -- fencing (review-local #8) -----------------------------------------------------------


async def test_a_stale_writers_batches_never_hide_the_new_owners_last_batch() -> None:
    table = Table()
    table.write(0, 4 * EPOCH + 9, "a")  # owner A, generation 4
    b, b_batches = await take_over(table, {0}, generation=5)  # B takes the partition
    assert resent(await b.prelude(0)) == ["a"]
    assert b_batches[0] == 5 * EPOCH
    for n in range(10, 60):  # A, unaware it lost the partition, goes on writing
        table.write(0, 4 * EPOCH + n, f"zombie{n}")
    table.write(0, b_batches[0], "b0")  # B's batches...
    table.write(0, b_batches[0] + 1, "b1")  # ...the last one unsent: B is killed
    c, _ = await take_over(table, {0}, generation=6)
    assert resent(await c.prelude(0)) == ["b1"], "B's last batch, not A's later numbers"


async def test_records_of_versions_before_epochs_are_outnumbered() -> None:
    table = Table()
    table.write(0, 123_456, "old")  # a plain counter
    recovery, batches = await take_over(table, {0}, generation=1)
    assert resent(await recovery.prelude(0)) == ["old"]
    assert batches[0] == EPOCH


async def test_after_the_group_is_deleted_owners_still_outnumber_the_table() -> None:
    assert owner_epoch(7, 3) == 7, "the generation, where it exceeds every epoch"
    assert owner_epoch(1, 57) == 58, "generations restarted: above the table's epoch"
    assert owner_epoch(2, 57) == 59, "and the next owner above that one"
    assert owner_epoch(0, 57) == 57, "unknown generation: counters go on"
    table = Table()
    table.write(0, 57 * EPOCH + 3, "a")
    recovery, batches = await take_over(table, {0}, generation=1)
    await recovery.prelude(0)
    assert batches[0] == 58 * EPOCH


async def test_without_a_generation_counters_go_on_from_the_last_batch() -> None:
    table = Table()
    table.write(0, 2 * EPOCH + 8, "a")
    recovery, batches = await take_over(table, {0}, generation=0)
    await recovery.prelude(0)
    assert batches[0] == 2 * EPOCH + 9


async def test_a_scan_begun_before_a_revoke_releases_no_lane_of_the_next_assignment() -> None:
    recovery = Recovery({})
    stale = recovery.scan({0}, chunked([(0, "a", record(1))]))  # its task has not run yet
    recovery.reset()  # a revoke comes first
    await stale
    waiting = asyncio.create_task(recovery.prelude(0))
    await settle()
    assert not waiting.done(), "released by the scan of an assignment that is gone"
    await recovery.scan({0}, chunked([(0, "b", record(2))]))
    assert resent(await waiting) == ["b"]


# -- the mark bounds the numbering (RRev F2) ---------------------------------------------


async def test_a_new_owner_numbers_its_batches_above_the_mark_epoch_and_counter() -> None:
    table = Table()
    table.write(0, 3 * EPOCH + 7, "parked")  # epoch 3: a saga that never expires
    # after a group reset, an owner of epoch 70 stopped cleanly; its every record expired
    table.marks[0] = sent_mark(70 * EPOCH + 5)
    recovery, batches = await take_over(table, {0}, generation=20)  # 20 < 70
    assert resent(await recovery.prelude(0)) == []  # the parked saga's batch is marked
    assert batches[0] == 90 * EPOCH, "the mark's epoch plus the generation, above the mark"
    table.marks[1] = sent_mark(5 * EPOCH + 9)
    recovery, batches = await take_over(table, {1}, generation=5)  # the mark's own epoch
    await recovery.prelude(1)
    assert batches[1] == 10 * EPOCH, "never at or under the mark, whatever the generation"


async def test_a_killed_owners_batch_is_re_sent_even_under_an_old_high_mark() -> None:
    table = Table()
    table.marks[0] = sent_mark(70 * EPOCH + 5)  # every record expired; the mark stays
    b, batches = await take_over(table, {0}, generation=20)
    assert await b.prelude(0) == []
    table.write(0, batches[0], "s")  # B's batch: records acknowledged, SIGKILL, no sends
    c, _ = await take_over(table, {0}, generation=21)
    assert resent(await c.prelude(0)) == ["s"], "B's unsent batch taken for sent: lost"


async def test_an_owner_under_an_old_high_mark_moves_it_at_its_clean_stop() -> None:
    table = Table()
    table.marks[0] = sent_mark(70 * EPOCH + 5)
    b, batches = await take_over(table, {0}, generation=20)
    await b.prelude(0)
    first = batches[0]
    table.write(0, first, "s1")  # B writes and sends a batch, then stops cleanly
    batches[0] += 1
    assert b.sent_marks({0}) == {0: first}, "a mark above its numbers would stay for good"


# -- a retried batch (RRev F3) -----------------------------------------------------------


async def test_a_lane_whose_batch_failed_and_was_retried_never_stops_drained() -> None:
    recovery = Recovery({0: 0, 1: 0})
    calls: dict[int, int] = {0: 0, 1: 0}

    async def handler(partition: int, events: list[Any], stopping: Any) -> None:
        calls[partition] += 1
        if partition == 0 and calls[0] == 1:  # e.g. a send that raised after the ack
            raise RuntimeError("a bug in the sends phase, once")
        recovery.batches[partition] += 1  # a batch written (and, this time, sent)

    lanes = Lanes("inbox", handler, batch_size=10, buffer=10, prelude=recovery.prelude)
    lanes.open({0, 1})
    await recovery.scan({0, 1}, chunked([]), generation=3)
    for partition in (0, 1):
        assert lanes.put_local(partition, f"r{partition}")
    for _ in range(200):  # the retry comes after the handler's backoff (0.5 s)
        if calls[0] == 2:
            break
        await asyncio.sleep(0.01)
    await settle()
    assert calls == {0: 2, 1: 1} and recovery.batches == {0: 3 * EPOCH + 1, 1: 3 * EPOCH + 1}
    drained = await lanes.stop()
    assert drained == {1}, "a retried batch may have lost its sends: no mark vouches for it"
    assert recovery.sent_marks(drained) == {1: 3 * EPOCH}


def events_of(producer: FakeProducer, saga_id: str) -> list[tuple[int, str]]:
    return [(e["seq"], e["type"]) for s in producer.to("t.lifecycle") if s.key == saga_id.encode()
            for e in s.events()]  # fmt: skip


async def test_a_batch_that_failed_after_its_records_were_acked_sends_them_when_retried() -> None:
    proc, producer, store, caught, partition = await local_run()
    send_batch, failures = producer.send_batch, [2]  # the first try and the first retry

    async def buggy(topic: str, p: int, records: Any) -> Any:
        if topic == "t.lifecycle" and records[0][0] == b"x" and failures[0]:
            failures[0] -= 1
            raise RuntimeError("a bug in the sends phase (not broker trouble)")
        return await send_batch(topic, p, records)

    producer.send_batch = buggy  # type: ignore[method-assign]
    result = caught[0][1]
    with pytest.raises(RuntimeError):
        await proc.handle(partition, [result], never)
    assert SagaState.model_validate_json(store["x"]).status == "completed", "stored, acked"
    assert events_of(producer, "x") == [(1, "saga_started"), (2, "step_started")]
    for _ in range(2):  # what Lane._handle does: the same batch again until it succeeds
        try:
            await proc.handle(partition, [result], never)
            break
        except RuntimeError:
            pass
    other = next(f"y{i}" for i in range(100) if partition_for(f"y{i}", PARTITIONS) == partition)
    later = Inbox().event(other, start("one", other))
    await proc.handle(partition, [later], never)  # a later batch: "x" is not in the last one
    assert events_of(producer, "x") == [
        (1, "saga_started"), (2, "step_started"), (3, "step_succeeded"), (4, "saga_completed")
    ], "the retry sent the events the failed try had stored"  # fmt: skip
    assert proc.deadlines.expiry.pop_due(partition, float("inf"), 10) == ["x"], (
        "the completed saga waits for its expiry (the failed try never queued it)"
    )


async def test_a_resend_of_a_record_this_worker_cannot_read_holds_up_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unreadable record of the last batch (written by another version, say): nothing
    can be re-sent from it, and the partition goes on (the inbox dead-letters what
    concerns that saga). Raised, it failed the prelude's batch for good: the lane retried
    it forever, and the partition never applied anything, nor expired (``ready``)."""
    proc, _, store, caught, partition = await local_run()
    store["u"] = b'{"saga_id":"u","status":"from-a-newer-version","batch":7}'
    await proc.handle(partition, [Resend("u"), caught[0][1]], never)
    assert SagaState.model_validate_json(store["x"]).status == "completed", "the batch went on"
    assert any("'u'" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


async def test_a_retry_that_writes_a_batch_keeps_the_failed_trys_sagas_in_it() -> None:
    """The failed try stored "x" (batch K) and its sends failed (a bug). Applied again
    later, an early timer of "t" in the same batch is due: the retry writes batch K+1 with
    "t". Killed between that batch's acknowledgement and its sends, the next owner re-sends
    the last batch only: "x" must be in it, or its events are never sent."""
    proc, producer, store, caught, partition = await local_run()
    t = next(f"t{i}" for i in range(100) if partition_for(f"t{i}", PARTITIONS) == partition)
    inbox = Inbox()
    inbox.offset = 100
    await proc.handle(partition, [inbox.event(t, start("one", t))], never)
    deadline = SagaState.model_validate_json(store[t]).pending
    assert deadline is not None
    timer = inbox.event(t, TimerFired(saga_id=t).to_json())  # early (applied before it)
    send_batch, failures = producer.send_batch, [1]

    async def buggy(topic: str, p: int, records: Any) -> Any:
        if topic == "t.lifecycle" and failures[0]:
            failures[0] -= 1
            raise RuntimeError("a bug in the sends phase (not broker trouble)")
        return await send_batch(topic, p, records)

    producer.send_batch = buggy  # type: ignore[method-assign]
    batch = [timer, caught[0][1]]
    with pytest.raises(RuntimeError):
        await proc.handle(partition, batch, never)
    assert SagaState.model_validate_json(store["x"]).status == "completed"
    proc.clock = lambda: deadline.deadline + timedelta(seconds=1)  # the back-off went by
    producer.failures = {"t.lifecycle": 1000, "t.step.svc": 1000}
    with pytest.raises(Abandoned):  # killed between the retry's records and its sends
        await proc.handle(partition, batch, lambda: True)
    assert SagaState.model_validate_json(store[t]).pending != deadline, "the retry wrote t"
    assert events_of(producer, "x") == [(1, "saga_started"), (2, "step_started")]
    recovery = Recovery({})
    table = [(partition, saga_id, raw) for saga_id, raw in store.items()]
    await recovery.scan({partition}, chunked(table), generation=2)
    assert "x" in resent(await recovery.prelude(partition)), "x's events are re-sent"
