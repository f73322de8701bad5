"""Helpers for the table-store and retention tests: the table's changelog as a test sees
it, the RocksDB files a worker left on disk, and saga ids placed on one partition."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from coordinator import CoordinatorSettings
from coordinator._routing import partition_for
from coordinator._topics import changelog_topic


@dataclass(frozen=True)
class Stored:
    """One changelog record of a saga: its offset and value (None: a tombstone)."""

    offset: int
    value: dict[str, Any] | None

    @property
    def compact(self) -> bool:
        return self.value is not None and bool(self.value.get("compact"))


async def changelog(settings: CoordinatorSettings, saga_id: str) -> list[Stored]:
    """Every record the table's changelog holds for ``saga_id``, oldest first."""
    topic = changelog_topic(settings)
    tp = TopicPartition(topic, partition_for(saga_id, settings.partitions))
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        consumer.assign([tp])
        start = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, start)
        found: list[Stored] = []
        position = start
        while position < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for record in batch.get(tp, []):
                position = record.offset + 1
                if record.key == saga_id.encode():
                    value = None if record.value is None else json.loads(record.value)
                    found.append(Stored(record.offset, value))
            if batch:  # a compacted log has gaps: trust the consumer's position once fetched
                position = max(position, await consumer.position(tp))
        return found
    finally:
        await consumer.stop()


async def changelog_end(settings: CoordinatorSettings, partition: int) -> int:
    """The changelog partition's end offset (the offset its next record will get)."""
    tp = TopicPartition(changelog_topic(settings), partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


def rocksdb_offsets(datadir: Path) -> dict[int, int]:
    """The changelog offset each partition's RocksDB database under ``datadir`` recorded
    (open them only while no worker holds them)."""
    import rocksdict
    from faust.stores.rocksdb import Store

    found: dict[int, int] = {}
    for path in sorted(datadir.rglob("*saga-state-*.db")):
        partition = int(path.name.rsplit("-", 1)[1].removesuffix(".db"))
        db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
        try:
            raw = db.get(Store.offset_key)
            if raw is not None:
                found[partition] = int(raw)
        finally:
            db.close()
    return found


def same_partition(prefix: str, saga_id: str, partitions: int, count: int) -> list[str]:
    """``count`` saga ids that land on ``saga_id``'s partition."""
    home = partition_for(saga_id, partitions)
    ids: list[str] = []
    i = 0
    while len(ids) < count:
        candidate, i = f"{prefix}-{i}", i + 1
        if partition_for(candidate, partitions) == home:
            ids.append(candidate)
    return ids
