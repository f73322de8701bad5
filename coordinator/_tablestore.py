"""The saga table's local store, written by the shell itself (``SAGA_STORE``).

The shell writes each saga record to the table's changelog and awaits the broker's
acknowledgement (``inbox``); only then does it write the record here. So the local store
never holds anything the changelog lacks, and a restart can rebuild it from the changelog.
Two stores:

* ``memory://`` (default; demo, tests): a dict in RAM. A restart or a rebalance replays
  the partition's whole compacted changelog: time grows with the sagas the table holds.
* ``rocksdb://`` (production): one RocksDB database per partition under ``SAGA_DATADIR``,
  holding raw key/value bytes exactly as Faust's changelog recovery writes them, plus the
  changelog offset applied so far, written in the same atomic batch as the records. A
  restart reads only the changelog written after that offset, and standby replicas
  (``SAGA_STANDBY_REPLICAS``) keep a warm copy on another worker, so a failover reads
  only the last few records.

Both hold raw JSON bytes keyed by the saga id (UTF-8); a tombstone (``None``) deletes.
Besides the sagas, each partition may hold one *sent mark* (``mark_key``): the number of
the last batch whose sends are known to have completed (``coordinator._local``). Its key
is longer than any saga id may be (``MAX_SAGA_ID``), so no saga can collide with it, and
``items`` / ``entries`` never yield it, nor ``get`` (``GET /sagas/{id}/`` answers 404).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import rocksdict  # faust-streaming[rocksdict], a project dependency

from coordinator._messages import MAX_SAGA_ID
from coordinator._routing import partition_for

#: records read between two yields to the event loop (``entries``)
CHUNK = 2000

#: ``(partition, saga id, record)``, as ``entries`` yields them
Entry = tuple[int, str, bytes]

T = TypeVar("T")


async def chunked(items: Iterable[T], size: int = CHUNK) -> AsyncIterator[list[T]]:
    """``items`` in lists of ``size``, yielding to the event loop after each.

    A pass over a worker's whole table is long (500,000 records: a third of a second in
    memory, more from disk): heartbeats, other partitions' lanes and the timer go on.
    """
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk
        await asyncio.sleep(0)


def mark_key(partition: int) -> str:
    """The table key of ``partition``'s sent mark (never a saga id: too long to be one)."""
    return f"~sent-mark~{partition}~".ljust(MAX_SAGA_ID + 1, "~")


class Store(Protocol):
    """The saga table's local store: saga id -> stored record (JSON bytes)."""

    def get(self, saga_id: str) -> bytes | None:
        """Return the saga's stored record (JSON bytes), if this worker holds it.

        None for a key longer than a saga id may be (``mark_key``): never a saga.
        """
        ...

    def mark(self, partition: int) -> bytes | None:
        """Return ``partition``'s sent mark, if it has one (``mark_key``)."""
        ...

    def write(
        self, partition: int, records: Mapping[str, bytes | None], offset: int | None
    ) -> None:
        """Apply changelog records the broker acknowledged, for one partition.

        Args:
            partition: the partition of every saga in ``records``.
            records: saga id -> new record; ``None`` deletes (a tombstone).
            offset: the highest changelog offset among them (None when unknown).
        """
        ...


def changelog_offset(acks: Iterable[Any]) -> int | None:
    """The highest offset among changelog acknowledgements (``RecordMetadata``)."""
    offsets = [o for o in (getattr(a, "offset", None) for a in acks) if isinstance(o, int)]
    return max(offsets, default=None)


class MemoryTableStore:
    """The table's Faust memory store, written directly (no changelog send by Faust).

    It keeps no offsets: Faust restores a partition from the start of its changelog.
    """

    def __init__(self, table: Any, partitions: int) -> None:
        self.table = table
        self.partitions = partitions

    def get(self, saga_id: str) -> bytes | None:
        """Return the saga's stored record (JSON bytes), if this worker holds it."""
        if len(saga_id) > MAX_SAGA_ID:
            return None  # no saga: a sent mark's key, say
        raw = self.table.data.get(saga_id)
        return raw if isinstance(raw, bytes) else None

    def mark(self, partition: int) -> bytes | None:
        """Return ``partition``'s sent mark, if it has one (``mark_key``)."""
        raw = self.table.data.get(mark_key(partition))
        return raw if isinstance(raw, bytes) else None

    def write(
        self, partition: int, records: Mapping[str, bytes | None], offset: int | None
    ) -> None:
        """Apply acknowledged records of one partition (the offset is not kept)."""
        store = self.table.data
        # Faust's memory store tracks each key's partition to drop revoked ones
        key_partition = getattr(store, "_key_partition", None)
        for saga_id, raw in records.items():
            if raw is None:
                if saga_id in store:
                    del store[saga_id]
                if key_partition is not None:
                    key_partition.pop(saga_id, None)
            else:
                store[saga_id] = raw
                if key_partition is not None:
                    key_partition[saga_id] = partition

    def items(self, partitions: Iterable[int]) -> Iterator[tuple[int, bytes]]:
        """``(partition, record)`` of every saga held for ``partitions`` (in no order)."""
        held = set(partitions)
        for saga_id, raw in list(self.table.data.items()):
            if isinstance(raw, bytes) and len(saga_id) <= MAX_SAGA_ID:
                p = partition_for(saga_id, self.partitions)
                if p in held:
                    yield p, raw

    async def entries(
        self, partitions: Iterable[int], *, chunk: int = CHUNK
    ) -> AsyncIterator[list[Entry]]:
        """``(partition, saga id, record)`` of every saga held for ``partitions``, in lists.

        Grouped by partition, in ascending order (a reader may finish with a partition as
        soon as the next one begins). The grouping reads Faust's key -> partition map (a
        dict lookup per record, not a hash), which its recovery and ``write`` keep. It is
        a pass over the whole table before the first entry: it yields to the event loop
        every ``chunk`` records, as the lists of entries do. The records are the table's
        at the first ``anext``.
        """
        held = set(partitions)
        groups: dict[int, list[tuple[str, bytes]]] = {p: [] for p in sorted(held)}
        where: Mapping[str, int] = getattr(self.table.data, "_key_partition", {})
        async for records in chunked(list(self.table.data.items()), chunk):
            for saga_id, raw in records:
                if isinstance(raw, bytes) and len(saga_id) <= MAX_SAGA_ID:
                    p = where.get(saga_id)
                    at = partition_for(saga_id, self.partitions) if p is None else p
                    group = groups.get(at)
                    if group is not None:
                        group.append((saga_id, raw))
        grouped = ((p, saga_id, raw) for p, group in groups.items() for saga_id, raw in group)
        async for entries in chunked(grouped, chunk):
            yield entries


class RocksTableStore:
    """The table's Faust RocksDB store, one database per partition, accessed directly.

    Faust's own ``Store.__setitem__`` needs the current stream event to pick a partition;
    the shell writes outside any event, so this addresses the partition's database itself.
    The layout is Faust's: raw changelog key and value bytes, and the applied changelog
    offset under Faust's ``offset_key``, which its recovery reads to seek past it.
    """

    def __init__(self, table: Any, partitions: int) -> None:
        self.table = table
        self.partitions = partitions

    @property
    def _store(self) -> Any:
        return self.table.data

    def _db(self, partition: int) -> Any:
        return self._store._db_for_partition(partition)

    def get(self, saga_id: str) -> bytes | None:
        """Return the saga's stored record (JSON bytes), if this worker holds it."""
        if len(saga_id) > MAX_SAGA_ID:
            return None  # no saga: a sent mark's key, say
        raw = self._db(partition_for(saga_id, self.partitions)).get(saga_id.encode())
        return raw if isinstance(raw, bytes) else None

    def mark(self, partition: int) -> bytes | None:
        """Return ``partition``'s sent mark, if it has one (``mark_key``)."""
        raw = self._db(partition).get(mark_key(partition).encode())
        return raw if isinstance(raw, bytes) else None

    def write(
        self, partition: int, records: Mapping[str, bytes | None], offset: int | None
    ) -> None:
        """Apply acknowledged records and their changelog offset in one atomic batch."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        for saga_id, raw in records.items():
            if raw is None:
                batch.delete(saga_id.encode())
            else:
                batch.put(saga_id.encode(), raw)
        if offset is not None:
            batch.put(self._store.offset_key, str(offset).encode())
        self._db(partition).write(batch)  # records and offset, atomically

    def items(self, partitions: Iterable[int]) -> Iterator[tuple[int, bytes]]:
        """``(partition, record)`` of every saga held for ``partitions``."""
        for p, _, raw in self._entries(partitions):
            yield p, raw

    def entries(
        self, partitions: Iterable[int], *, chunk: int = CHUNK
    ) -> AsyncIterator[list[Entry]]:
        """``(partition, saga id, record)`` of every saga held for ``partitions``, in lists.

        Grouped by partition (one database each), in ascending order; read from disk
        ``chunk`` records at a time, yielding to the event loop after each.
        """
        return chunked(self._entries(partitions), chunk)

    def _entries(self, partitions: Iterable[int]) -> Iterator[Entry]:
        offset_key = self._store.offset_key
        for partition in sorted(set(partitions)):
            mark = mark_key(partition).encode()  # (a key's bytes may outnumber its characters)
            for key, raw in self._db(partition).items():
                if key != offset_key and key != mark and isinstance(raw, bytes):
                    yield partition, bytes(key).decode(errors="replace"), raw


def table_store(table: Any, store_url: str, partitions: int) -> MemoryTableStore | RocksTableStore:
    """The local store matching ``SAGA_STORE``."""
    if store_url.startswith("rocksdb://"):
        return RocksTableStore(table, partitions)
    return MemoryTableStore(table, partitions)
