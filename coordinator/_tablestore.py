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
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

import rocksdict  # faust-streaming[rocksdict], a project dependency

from coordinator._routing import partition_for


class Store(Protocol):
    """The saga table's local store: saga id -> stored record (JSON bytes)."""

    def get(self, saga_id: str) -> bytes | None:
        """Return the saga's stored record (JSON bytes), if this worker holds it."""
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
        raw = self.table.data.get(saga_id)
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
        """``(partition, record)`` of every saga held for ``partitions``."""
        for p, _, raw in self.entries(partitions):
            yield p, raw

    def entries(self, partitions: Iterable[int]) -> Iterator[tuple[int, str, bytes]]:
        """``(partition, saga id, record)`` of every saga held for ``partitions``."""
        held = set(partitions)
        for saga_id, raw in list(self.table.data.items()):
            if isinstance(raw, bytes):
                p = partition_for(saga_id, self.partitions)
                if p in held:
                    yield p, saga_id, raw


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
        raw = self._db(partition_for(saga_id, self.partitions)).get(saga_id.encode())
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
        for p, _, raw in self.entries(partitions):
            yield p, raw

    def entries(self, partitions: Iterable[int]) -> Iterator[tuple[int, str, bytes]]:
        """``(partition, saga id, record)`` of every saga held for ``partitions``."""
        offset_key = self._store.offset_key
        for partition in sorted(set(partitions)):
            for key, raw in self._db(partition).items():
                if key != offset_key and isinstance(raw, bytes):
                    yield partition, bytes(key).decode(errors="replace"), raw


def table_store(table: Any, store_url: str, partitions: int) -> MemoryTableStore | RocksTableStore:
    """The local store matching ``SAGA_STORE``."""
    if store_url.startswith("rocksdb://"):
        return RocksTableStore(table, partitions)
    return MemoryTableStore(table, partitions)
