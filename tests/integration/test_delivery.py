"""``deliver`` over a real broker: per-partition order, offsets, and a batch the broker
refuses (a failed delivery that must not let later records of the partition overtake)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from coordinator._delivery import BATCH_BUFFER, AiokafkaBatches, Backoff, Record, deliver

pytestmark = pytest.mark.integration


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_batch_size=BATCH_BUFFER)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def create(bootstrap: str, topic: str, partitions: int, **config: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=config)])
    finally:
        await admin.close()


async def read(bootstrap: str, topic: str, partitions: int, count: int) -> dict[int, list[bytes]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    got: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    try:
        async with asyncio.timeout(60):
            while sum(len(v) for v in got.values()) < count:
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    got[tp.partition].extend(r.value or b"" for r in records)
    finally:
        await consumer.stop()
    return got


async def test_each_partition_receives_its_records_in_order_with_their_offsets(
    kafka_bootstrap: str, topic_prefix: str, producer: AIOKafkaProducer
) -> None:
    topic = f"{topic_prefix}.delivery"
    await create(kafka_bootstrap, topic, 3)
    # keyed records (partition from the key, as for saga events) and big ones that need
    # several batches per partition
    records = [Record(topic, f"saga-{i % 7}".encode(), f"{i:04d}".encode()) for i in range(300)]
    records += [Record(topic, b"big", b"B" * 100_000 + f"{i}".encode()) for i in range(6)]
    sender = AiokafkaBatches(lambda: producer)
    acks = await deliver(sender, records, Backoff(lambda: False), what="test")
    got = await read(kafka_bootstrap, topic, 3, len(records))
    for ack, record in zip(acks, records, strict=True):
        assert ack.offset is not None
        assert got[ack.partition][ack.offset] == record.value
    for key in {r.key for r in records}:
        mine = [a for a, r in zip(acks, records, strict=True) if r.key == key]
        assert len({a.partition for a in mine}) == 1  # one key, one partition
        assert [a.offset for a in mine] == sorted(a.offset or 0 for a in mine)


async def test_a_batch_the_broker_refuses_is_re_sent_in_order_and_nothing_overtakes_it(
    kafka_bootstrap: str, topic_prefix: str, producer: AIOKafkaProducer
) -> None:
    """The topic takes records of 1,000 bytes but not a batch of several: the broker
    refuses the first batch (a failed delivery). Every record still lands once, in order."""
    topic = f"{topic_prefix}.refusing"
    await create(kafka_bootstrap, topic, 1, **{"max.message.bytes": "2000"})
    records = [Record(topic, b"k", f"{i}".encode() * 1 + b"." * 900, 0) for i in range(5)]
    sender = AiokafkaBatches(lambda: producer)
    acks = await deliver(sender, records, Backoff(lambda: False, first=0.01), what="test")
    got = await read(kafka_bootstrap, topic, 1, len(records))
    assert got[0] == [r.value for r in records]
    assert [a.offset for a in acks] == [0, 1, 2, 3, 4]
