"""Reading what the coordinator answered to one saga's command, straight from Kafka.

Every saga topic is keyed by saga id, so everything about one saga sits in one partition
per topic (Kafka's default partitioner: murmur2 of the key, as in the Java client). A
:class:`KeyWatch` positions a consumer at the current end of that partition of a few
topics *before* a command is sent, then yields the records for that key that follow.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from coordinator._errors import CoordinatorUnavailable

__all__ = ["KeyWatch", "Record", "partition_counts", "partition_for"]


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` (murmur2, Java-compatible).

    Remote participants must pick the same one; librdkafka's default (``consistent_random``)
    does not, use its ``murmur2_random`` partitioner.
    """
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


_M = 0x5BD1E995
_U32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data`` (``aiokafka.partitioner.murmur2``, Java's ``Utils.murmur2``).

    The same function, a few times faster: the words are unpacked at once and only the
    bits that can overflow are masked. The inbox hashes every record's saga id with it.
    """
    length = len(data)
    h = 0x9747B28C ^ length
    for k in struct.unpack_from(f"<{length >> 2}I", data):
        k = (k * _M) & _U32
        h = ((h * _M) ^ ((k ^ (k >> 24)) * _M)) & _U32
    tail, at = length & 3, length & ~3
    if tail >= 3:
        h ^= data[at + 2] << 16
    if tail >= 2:
        h ^= data[at + 1] << 8
    if tail >= 1:
        h = ((h ^ data[at]) * _M) & _U32
    h = ((h ^ (h >> 13)) * _M) & _U32
    return h ^ (h >> 15)


async def partition_counts(bootstrap_servers: str, topics: Sequence[str]) -> dict[str, int]:
    """How many partitions each topic has; raises if one does not exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    counts = {d["topic"]: len(d["partitions"]) for d in described if not d["error_code"]}
    for topic in topics:
        if not counts.get(topic):
            raise CoordinatorUnavailable(
                f"topic {topic!r} does not exist on {bootstrap_servers}: start a coordinator "
                "worker with this SAGA_TOPIC_PREFIX (or run `python -m coordinator topics`)"
            )
    return counts


@dataclass(frozen=True)
class Record:
    """One record of the watched key."""

    topic: str
    partition: int
    offset: int
    value: bytes


class KeyWatch:
    """Records of one key on a few topics, from the moment the watch is entered.

    Use as ``async with KeyWatch(bootstrap, {topic: partitions, ...}, key) as watch: ...
    await watch.poll(0.2)``.
    """

    def __init__(self, bootstrap_servers: str, topics: Mapping[str, int], key: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topics = dict(topics)
        self.key = key
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False
        )

    async def __aenter__(self) -> KeyWatch:
        await self._consumer.start()
        try:
            assigned = [
                TopicPartition(topic, partition_for(self.key, count))
                for topic, count in self.topics.items()
            ]
            self._consumer.assign(assigned)
            ends = await self._consumer.end_offsets(assigned)
            for tp in assigned:
                self._consumer.seek(tp, ends[tp])
        except BaseException:
            await self._consumer.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._consumer.stop()

    async def poll(self, seconds: float) -> list[Record]:
        """The key's records that arrived since the last poll (waits up to ``seconds``)."""
        batch = await self._consumer.getmany(timeout_ms=int(seconds * 1000))
        key = self.key.encode()
        return [
            Record(tp.topic, tp.partition, r.offset, r.value or b"")
            for tp, records in batch.items()
            for r in records
            if r.key == key
        ]
