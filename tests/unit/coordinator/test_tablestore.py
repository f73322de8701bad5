"""The saga table's local stores (``SAGA_STORE``): memory, and RocksDB on disk whose
applied changelog offset is the one Faust's recovery reads at the next start."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.types import TP

from coordinator import CoordinatorSettings, SagaRegistry
from coordinator._routing import partition_for, saga_table
from coordinator._tablestore import (
    MemoryTableStore,
    RocksTableStore,
    changelog_offset,
    mark_key,
    table_store,
)

PARTITIONS = 4


def table(store: str, datadir: Path) -> object:
    app = faust.App("store-test", store=store, datadir=str(datadir))
    return saga_table(app, "saga-state", PARTITIONS)


def on(partition: int, n: int) -> list[str]:
    """``n`` saga ids that live on ``partition``."""
    ids = [f"s{i}" for i in range(200) if partition_for(f"s{i}", PARTITIONS) == partition]
    return ids[:n]


def changelog_tp(t: object) -> TP:
    return TP(t.changelog_topic.get_topic_name(), 1)  # type: ignore[attr-defined]


@pytest.mark.parametrize("scheme", ["memory://", "rocksdb://"])
def test_records_are_written_read_and_deleted_per_partition(scheme: str, tmp_path: Path) -> None:
    t = table(scheme, tmp_path)
    store = table_store(t, scheme, PARTITIONS)
    assert isinstance(store, RocksTableStore if scheme == "rocksdb://" else MemoryTableStore)
    a, b = on(1, 2)
    (c,) = on(2, 1)
    store.write(1, {a: b'{"a":1}', b: b'{"b":1}'}, 10)
    store.write(2, {c: b'{"c":1}'}, 4)
    assert store.get(a) == b'{"a":1}' and store.get(c) == b'{"c":1}'
    store.write(1, {a: None, b: b'{"b":2}'}, 11)  # a tombstone and an update
    assert store.get(a) is None and store.get(b) == b'{"b":2}'
    assert sorted(store.items([1])) == [(1, b'{"b":2}')]
    assert sorted(store.items([1, 2])) == [(1, b'{"b":2}'), (2, b'{"c":1}')]
    assert store.get("never-written") is None


def test_rocksdb_keeps_records_and_the_applied_offset_across_a_restart(tmp_path: Path) -> None:
    first = table("rocksdb://", tmp_path)
    store = table_store(first, "rocksdb://", PARTITIONS)
    a, b = on(1, 2)
    store.write(1, {a: b"A", b: b"B"}, 41)
    store.write(1, {b: None}, 42)
    # what Faust's changelog recovery reads to seek past what the disk already holds
    assert first.data.persisted_offset(changelog_tp(first)) == 42  # type: ignore[attr-defined]

    first.data._dbs.clear()  # type: ignore[attr-defined]  # the process is gone
    again = table("rocksdb://", tmp_path)  # a new worker on the same data directory
    restored = table_store(again, "rocksdb://", PARTITIONS)
    assert again.data.persisted_offset(changelog_tp(again)) == 42  # type: ignore[attr-defined]
    assert restored.get(a) == b"A" and restored.get(b) is None
    assert list(restored.items([1])) == [(1, b"A")], "the offset key is not a saga"


def test_a_batch_without_a_known_offset_keeps_the_previous_one(tmp_path: Path) -> None:
    t = table("rocksdb://", tmp_path)
    store = table_store(t, "rocksdb://", PARTITIONS)
    (a,) = on(1, 1)
    store.write(1, {a: b"A"}, 5)
    store.write(1, {a: b"A2"}, None)
    assert t.data.persisted_offset(changelog_tp(t)) == 5  # type: ignore[attr-defined]


def test_changelog_offset_is_the_highest_acknowledged() -> None:
    class Ack:
        def __init__(self, offset: int) -> None:
            self.offset = offset

    assert changelog_offset([Ack(3), Ack(9), Ack(4)]) == 9
    assert changelog_offset([object()]) is None
    assert changelog_offset([]) is None


def test_the_store_setting_names_both_choices() -> None:
    assert CoordinatorSettings(store="rocksdb://").store == "rocksdb://"
    with pytest.raises(ValueError, match=r"memory:// .* or rocksdb://"):
        CoordinatorSettings(store="redis://localhost")


def test_retention_settings_take_seconds_iso_8601_or_none() -> None:
    s = CoordinatorSettings(retention="90", dedupe_retention="P7D")
    assert s.retention_policy.keep is not None and s.retention_policy.keep.total_seconds() == 90
    assert s.retention_policy.dedupe.days == 7
    assert CoordinatorSettings(retention="none").retention_policy.keep is None


async def test_the_inbox_hands_the_store_the_last_acknowledged_changelog_offset() -> None:
    from tests.unit.coordinator.sagas import linear_saga
    from tests.unit.coordinator.shell_kit import (
        CHANGELOG,
        DictStore,
        FakeProducer,
        Inbox,
        never,
        processor,
        start,
    )
    from tests.unit.coordinator.shell_kit import PARTITIONS as SHELL_PARTITIONS

    registry = SagaRegistry([linear_saga(2)])
    producer, store = FakeProducer(), DictStore()
    proc, inbox = processor(registry, producer, store), Inbox()
    ids = [f"s{i}" for i in range(40)]
    home = partition_for(ids[0], SHELL_PARTITIONS)
    mine = [s for s in ids if partition_for(s, SHELL_PARTITIONS) == home][:3]
    await proc.handle(home, [inbox.event(s, start("linear2", s)) for s in mine[:2]], never)
    await proc.handle(home, [inbox.event(mine[2], start("linear2", mine[2]))], never)
    acked = [s.offset for s in producer.to(CHANGELOG) if s.partition == home]
    assert acked == [0, 1, 2]
    assert store.offsets == {home: 2}, "the highest acknowledged offset of the last batch"


async def entries_of(store: MemoryTableStore | RocksTableStore, held: list[int]) -> list[Any]:
    return [entry async for chunk in store.entries(held) for entry in chunk]


@pytest.mark.parametrize("scheme", ["memory://", "rocksdb://"])
async def test_sent_marks_are_kept_per_partition_and_are_no_sagas(
    scheme: str, tmp_path: Path
) -> None:
    store = table_store(table(scheme, tmp_path), scheme, PARTITIONS)
    (a,) = on(1, 1)
    store.write(1, {a: b"A", mark_key(1): b'{"sent":3}'}, 7)
    store.write(2, {mark_key(2): b'{"sent":9}'}, 2)
    assert store.mark(1) == b'{"sent":3}' and store.mark(2) == b'{"sent":9}'
    assert store.mark(3) is None
    assert list(store.items([1, 2])) == [(1, b"A")]
    assert await entries_of(store, [1, 2]) == [(1, a, b"A")]


@pytest.mark.parametrize("scheme", ["memory://", "rocksdb://"])
def test_a_mark_is_never_got_as_a_saga(scheme: str, tmp_path: Path) -> None:
    store = table_store(table(scheme, tmp_path), scheme, PARTITIONS)
    # what ``GET /sagas/{id}/`` reads (404 on None); RocksDB looks in the key's hash
    # partition, so each mark is written there too
    for p in range(PARTITIONS):
        for where in {p, partition_for(mark_key(p), PARTITIONS)}:
            store.write(where, {mark_key(p): b'{"sent":3}'}, None)
        assert store.get(mark_key(p)) is None, f"the mark of partition {p} served as a saga"
    assert store.mark(1) == b'{"sent":3}'


@pytest.mark.parametrize("scheme", ["memory://", "rocksdb://"])
async def test_entries_come_grouped_by_partition(scheme: str, tmp_path: Path) -> None:
    store = table_store(table(scheme, tmp_path), scheme, PARTITIONS)
    ones, twos, threes = on(1, 3), on(2, 3), on(3, 3)
    for one, two, three in zip(ones, twos, threes, strict=True):  # written interleaved
        store.write(3, {three: b"3"}, None)
        store.write(1, {one: b"1"}, None)
        store.write(2, {two: b"2"}, None)
    found = await entries_of(store, [3, 1, 2])
    assert [p for p, _, _ in found] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert sorted(saga_id for _, saga_id, _ in found) == sorted(ones + twos + threes)


@pytest.mark.parametrize("scheme", ["memory://", "rocksdb://"])
async def test_reading_a_whole_table_yields_to_the_event_loop(scheme: str, tmp_path: Path) -> None:
    """Memory: the pass that groups the table by partition too, before the first entry."""
    store = table_store(table(scheme, tmp_path), scheme, PARTITIONS)
    for i in range(1000):
        store.write(partition_for(f"s{i}", PARTITIONS), {f"s{i}": b"x"}, None)
    turns = 0

    async def elsewhere() -> None:  # heartbeats, the timer, another partition's lane
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(elsewhere())
    try:
        entries = store.entries(range(PARTITIONS), chunk=10)
        first = await anext(entries)
        before = turns
        found = first + [entry async for chunk in entries for entry in chunk]
    finally:
        other.cancel()
    if scheme == "memory://":
        assert before >= 1000 // 10 - 1, "the loop ran all along the grouping pass"
    assert turns - before >= 1000 // 10 - 1, "and all along the reading"
    assert sorted(saga_id for _, saga_id, _ in found) == sorted(f"s{i}" for i in range(1000))
    assert [p for p, _, _ in found] == sorted(p for p, _, _ in found), "grouped as before"
