"""Expiry applied by the owning worker itself: batched, idempotent, crash-safe, and only
for finished sagas of the partitions it holds (``coordinator._expiry``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from coordinator._deadlines import DeadlineIndex
from coordinator._delivery import Abandoned
from coordinator._expiry import Expirer
from coordinator._retention import Retention
from coordinator._routing import partition_for
from coordinator._state import Pending, SagaState
from tests.unit.coordinator.shell_kit import (
    CHANGELOG,
    PARTITIONS,
    DictStore,
    FakeProducer,
    Inbox,
    never,
    processor,
    start,
)
from tests.unit.coordinator.test_onehop import settle
from tests.unit.coordinator.test_shell import REGISTRY, result_for, stored

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEEP, DEDUPE = timedelta(minutes=10), timedelta(hours=1)


def record(saga_id: str, status: str, *, expires_at: datetime | None = None) -> SagaState:
    return SagaState(
        saga_id=saga_id,
        saga_type="linear2",
        saga_version=1,
        status=status,  # type: ignore[arg-type]
        input={"n": 1},
        steps=[],
        seq=4,
        started_at=T0,
        updated_at=T0,
        finished_at=T0 if expires_at else None,
        expires_at=expires_at,
        last_message="0:7",
    )


class World:
    """A store, a producer, a deadline index and an expirer on a settable clock."""

    def __init__(self, dedupe: timedelta = DEDUPE) -> None:
        self.store, self.producer, self.index = DictStore(), FakeProducer(), DeadlineIndex()
        self.now = T0.timestamp()
        self.expirer = Expirer(
            self.index.expiry,
            self.store,
            self.producer,
            Retention(keep=KEEP, dedupe=dedupe),
            clock=lambda: self.now,
        )
        self.expirer.changelog = CHANGELOG
        self.expirer.held = set(range(PARTITIONS))

    def put(self, state: SagaState) -> int:
        partition = partition_for(state.saga_id, PARTITIONS)
        self.store.write(partition, {state.saga_id: state.model_dump_json().encode()}, None)
        self.index.set_state(state, partition)
        return partition

    async def expire_due(self, partition: int) -> int:
        due = self.index.expiry.pop_due(partition, self.now, 1000)
        return await self.expirer.expire(partition, due)

    def changelog(self, saga_id: str) -> list[bytes]:
        return [s.value for s in self.producer.to(CHANGELOG) if s.key == saga_id.encode()]


async def test_a_finished_saga_shrinks_to_a_marker_then_a_tombstone_without_a_timer() -> None:
    w = World()
    p = w.put(record("x", "completed", expires_at=T0 + KEEP))
    assert w.index.get("x") is None, "no timer record: the expiry queue holds it"
    assert await w.expire_due(p) == 0  # not due yet
    w.now = (T0 + KEEP).timestamp()
    assert await w.expire_due(p) == 1
    marker = stored(w.store, "x")
    assert marker.compact and marker.status == "completed" and marker.seq == 4
    assert marker.last_message == "0:7", "a redelivered old record is still known as old"
    assert marker.expires_at == T0 + KEEP + DEDUPE
    assert await w.expire_due(p) == 0, "idempotent: the marker is not due"
    w.now = (T0 + KEEP + DEDUPE).timestamp()
    assert await w.expire_due(p) == 1
    assert "x" not in w.store and w.changelog("x")[-1] == b"", "a tombstone"
    assert len(w.changelog("x")) == 2 and len(w.index.expiry) == 0


async def test_without_a_dedupe_window_the_record_is_deleted_at_once() -> None:
    w = World(dedupe=timedelta(0))
    p = w.put(record("x", "compensated", expires_at=T0))
    assert await w.expire_due(p) == 1
    assert w.changelog("x") == [b""] and "x" not in w.store


async def test_resting_unfinished_sagas_are_never_expired() -> None:
    w = World()
    for status in ("compensation_failed", "parked"):
        w.put(record(status, status, expires_at=T0))  # even with an expiry left over
    assert len(w.index.expiry) == 0
    w.now = (T0 + DEDUPE * 10).timestamp()
    for status in ("compensation_failed", "parked"):
        partition = partition_for(status, PARTITIONS)
        assert await w.expirer.expire(partition, [status]) == 0
        assert not stored(w.store, status).compact
    assert w.producer.to(CHANGELOG) == []


async def test_a_stale_entry_changes_nothing() -> None:
    w = World()
    p = w.put(record("x", "completed", expires_at=T0))
    reopened = record("x", "compensating")
    reopened.pending = Pending(
        phase="compensation", step=0, attempt=1, waiting="result", deadline=T0
    )
    w.put(reopened)  # a late success re-opened the unwind: the expiry entry stays behind
    assert await w.expire_due(p) == 0
    assert w.producer.to(CHANGELOG) == [] and w.index.get("x") == T0.timestamp()
    assert await w.expirer.expire(p, ["never-existed"]) == 0


async def test_many_expiries_of_a_partition_are_one_batch_of_records() -> None:
    w = World()
    ids = [i for i in (f"b{n}" for n in range(400)) if partition_for(i, PARTITIONS) == 0][:50]
    for saga_id in ids:
        w.put(record(saga_id, "completed", expires_at=T0))
    assert await w.expire_due(0) == 50
    assert w.store.offsets[0] == 49, "one store write, with the last acknowledged offset"


async def test_a_broker_outage_is_retried_in_place_and_a_revoke_abandons_it() -> None:
    w = World()
    p = w.put(record("x", "completed", expires_at=T0))
    w.producer.failures[CHANGELOG] = 2
    assert await w.expire_due(p) == 1  # retried until acknowledged
    assert stored(w.store, "x").compact
    w.now += DEDUPE.total_seconds()
    w.producer.failures[CHANGELOG] = 1000
    task = asyncio.create_task(w.expire_due(p))
    await asyncio.sleep(0.05)
    w.expirer.held = set()  # revoked while retrying: nothing reaches the store
    with pytest.raises(Abandoned):
        await task
    assert stored(w.store, "x").compact
    # the next owner rebuilds its queue from the table: the expiry fires again
    other = DeadlineIndex()
    raw = w.store["x"]
    await other.rebuild([p], [(p, raw)])
    assert other.expiry.pop_due(p, w.now, 10) == ["x"]


async def test_the_timer_expires_only_held_partitions_and_a_revoke_waits_for_it() -> None:
    w = World()
    p = w.put(record("x", "completed", expires_at=T0))
    other = next(f"y{i}" for i in range(99) if partition_for(f"y{i}", PARTITIONS) != p)
    q = w.put(record(other, "completed", expires_at=T0))
    w.expirer.held = {p}
    w.expirer.tick()
    for _ in range(20):  # let the round run; a revoke then waits for what is in progress
        await asyncio.sleep(0)
    await w.expirer.stop()
    assert stored(w.store, "x").compact
    assert not any(stored(w.store, s).compact for s in w.store if s != "x")
    assert len(w.index.expiry.pop_due(q, w.now, 10)) == 1


async def test_a_partition_expires_only_while_assigned_and_once_its_lane_is_ready() -> None:
    w = World()
    w.expirer.held = set()
    p = w.put(record("x", "completed", expires_at=T0))
    w.expirer.ready(p)  # a lane that finished its prelude as its partition was revoked
    assert w.expirer.held == set()
    w.expirer.assigned = {p}  # the next assignment: its lane has not re-sent yet
    w.expirer.tick()
    await settle()
    assert not stored(w.store, "x").compact
    w.expirer.ready(p)
    w.expirer.tick()
    await settle()
    assert stored(w.store, "x").compact
    await w.expirer.stop()
    assert w.expirer.assigned == w.expirer.held == set()


async def test_the_inbox_queues_a_finished_saga_for_expiry_once() -> None:
    producer, store = FakeProducer(), DictStore()
    proc = processor(REGISTRY, producer, store, retention=KEEP)
    inbox = Inbox()
    begin = inbox.event("s1", start("linear2", "s1"))
    p = begin.message.partition
    await proc.handle(p, [begin], never)
    await proc.handle(p, [inbox.event("s1", result_for(producer, "s0", ref="a"))], never)
    await proc.handle(p, [inbox.event("s1", result_for(producer, "s1", ref="b"))], never)
    assert stored(store, "s1").status == "completed"
    again = inbox.event("s1", start("linear2", "s1"))  # changes nothing: not queued again
    await proc.handle(p, [again], never)
    assert proc.deadlines.get("s1") is None and len(proc.deadlines.expiry) == 1


async def test_a_revoke_never_waits_forever_for_a_partition_lock() -> None:
    """An inbox batch retrying in place holds the lock; the round waiting on it is cancelled."""
    w = World()
    p = w.put(record("x", "completed", expires_at=T0))
    blocker = asyncio.Event()

    async def inbox_batch_retrying_in_place() -> None:
        async with w.expirer.lock(p):
            await blocker.wait()  # released only when its lane is told to stop

    batch = asyncio.create_task(inbox_batch_retrying_in_place())
    await asyncio.sleep(0)
    w.expirer.tick()
    await asyncio.sleep(0.01)
    stop = asyncio.create_task(w.expirer.stop(timeout=0.2))
    await asyncio.sleep(0.05)
    assert not stop.done(), "a round in progress is waited for, up to the timeout"
    await asyncio.wait_for(stop, timeout=2)  # then cancelled: the revoke goes on
    blocker.set()
    await batch
    assert not stored(w.store, "x").compact and w.changelog("x") == [], "nothing written"
