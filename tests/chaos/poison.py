"""Poison records for the inbox, step and lifecycle topics, and the dead letters they owe.

Every kind the issue names: invalid JSON, wrong schema, wrong key, binary, 1 MB and 5 MB
records. The test topics' ``max.message.bytes`` is raised first so the big records really
land (the shared broker keeps Kafka's 1 MB default); the dead-letter topic keeps the
default on purpose: a dead letter must fit a normal topic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from coordinator._messages import StartSaga, StepRequest
from coordinator.events import DeadLetter, SagaStarted

MB = 1024 * 1024
BIG_TOPIC_BYTES = 16 * MB
BINARY = bytes(range(256)) * 4  # not UTF-8, not JSON


@dataclass(frozen=True)
class Poison:
    """One poison record: where it goes, what it is, whether a dead letter is owed."""

    topic: str
    kind: str
    key: bytes
    value: bytes
    dead_letter_owed: bool = True


@dataclass(frozen=True)
class Landed:
    poison: Poison
    partition: int
    offset: int


def junk(size: int) -> bytes:
    """``size`` bytes that start like JSON and never close."""
    return b'{"kind": "start", "pad": "' + b"x" * size


def malformed(topic: str, tag: str, *, truncated: bytes, wrong_schema: bytes) -> list[Poison]:
    """The kinds every topic gets: invalid JSON, wrong schema, binary, 1 MB, 5 MB."""
    return [
        Poison(topic, "invalid JSON", f"{tag}-ij".encode(), truncated),
        Poison(topic, "wrong schema", f"{tag}-ws".encode(), wrong_schema),
        Poison(topic, "binary", f"{tag}-bin".encode(), BINARY),
        Poison(topic, "1 MB", f"{tag}-1mb".encode(), junk(MB)),
        Poison(topic, "5 MB", f"{tag}-5mb".encode(), junk(5 * MB)),
    ]


def inbox_poison(topic: str, tag: str) -> list[Poison]:
    """(The inbox's wrong-key record is :func:`wrong_key_start`.)"""
    return malformed(
        topic, tag, truncated=b'{"kind": "start",', wrong_schema=b'{"kind": "start", "saga_id": 5}'
    )


def step_poison(topic: str, tag: str) -> list[Poison]:
    # a well-formed request under the wrong key, for a saga that does not exist, expired
    # and with an input the step cannot use: an executor may take it (it is well-formed),
    # but no participant may be called for it
    request = StepRequest(
        saga_id=f"{tag}-nosuch",
        saga_type="order_fulfillment",
        saga_version=1,
        step="create_order",
        service="order",
        phase="action",
        attempt=1,
        idempotency_key=f"{tag}-nosuch:create_order:do",
        input={},
        outputs={},
        deadline=datetime.now(UTC) - timedelta(minutes=5),
    )
    return [
        *malformed(
            topic, tag, truncated=b'{"saga_id": ', wrong_schema=b'{"saga_id": "x", "attempt": 1}'
        ),
        Poison(topic, "wrong key", b"not-the-saga-id", request.to_json(), dead_letter_owed=False),
    ]


def lifecycle_poison(topic: str, tag: str) -> list[Poison]:
    event = SagaStarted(
        event_id=f"{tag}-wk:1",
        saga_id=f"{tag}-wk",
        saga_type="chaos_unknown_type",
        saga_version=1,
        seq=1,
        occurred_at=datetime.now(UTC),
        data={},
    )
    # a batch record whose second event is invalid: that event is owed a dead letter (the
    # first, of a saga type no listener follows, is applied and ignored)
    first = {**event.model_dump(mode="json"), "saga_id": f"{tag}-lb", "event_id": f"{tag}-lb:1"}
    invalid = {**first, "event_id": f"{tag}-lb:2", "seq": "second"}
    batch = {"schema_version": 1, "saga_id": f"{tag}-lb", "events": [first, invalid]}
    return [
        *malformed(topic, tag, truncated=b'{"type": ', wrong_schema=b'{"type": "saga_started"}'),
        Poison(topic, "wrong key", b"not-the-saga-id", event.model_dump_json().encode()),
        Poison(topic, "invalid event in a batch", f"{tag}-lb".encode(), json.dumps(batch).encode()),
    ]


def start_record(topic: str, saga_id: str, saga_input: dict[str, object], kind: str) -> Poison:
    """A well-formed start, keyed by its saga id (``kind`` says what is wrong with it)."""
    start = StartSaga(
        saga_id=saga_id, at=datetime.now(UTC), saga_type="order_fulfillment", input=saga_input
    )
    return Poison(topic, kind, saga_id.encode(), start.to_json())


def wrong_key_start(topic: str, saga_id: str, saga_input: dict[str, object]) -> Poison:
    """A well-formed start under another key: re-routed (and run) or dead-lettered."""
    record = start_record(topic, saga_id, saga_input, "wrong key")
    return Poison(topic, "wrong key", b"not-" + saga_id.encode(), record.value, False)


DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs config_source: set on the topic itself


async def raise_size_limits(bootstrap: str, topics: list[str]) -> None:
    """Raise ``max.message.bytes`` of ``topics``, keeping their other topic-level settings
    (AlterConfigs replaces the whole set, e.g. the inbox's ``message.timestamp.type``)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
        )
        kept: dict[str, dict[str, str]] = {topic: {} for topic in topics}
        for response in described:
            for _, _, _, name, entries in response.resources:
                kept[name] = {e[0]: e[1] for e in entries if e[3] == DYNAMIC_TOPIC_CONFIG}
        await admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    topic,
                    configs={**kept[topic], "max.message.bytes": str(BIG_TOPIC_BYTES)},
                )
                for topic in topics
            ]
        )
    finally:
        await admin.close()


async def inject(bootstrap: str, records: list[Poison]) -> list[Landed]:
    """Produce every record (acks=all) and return where each landed."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, max_request_size=BIG_TOPIC_BYTES, acks="all"
    )
    await producer.start()
    try:
        landed = []
        for record in records:
            meta = await producer.send_and_wait(record.topic, record.value, key=record.key)
            landed.append(Landed(record, meta.partition, meta.offset))
        return landed
    finally:
        await producer.stop()


async def read_dead_letters(bootstrap: str, topic: str, partitions: int) -> list[DeadLetter]:
    """Every dead letter on the topic now (from the beginning to the current end)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=BIG_TOPIC_BYTES,
        fetch_max_bytes=4 * BIG_TOPIC_BYTES,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        letters: list[DeadLetter] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    try:
                        letters.append(DeadLetter.model_validate_json(record.value or b""))
                    except ValueError:
                        letters.append(_unreadable(record.offset))
        return letters
    finally:
        await consumer.stop()


def _unreadable(offset: int) -> DeadLetter:
    return DeadLetter(
        source_topic="?",
        offset=offset,
        value_b64="",
        reason="",
        error_type="UnreadableDeadLetter",
        agent="?",
        occurred_at=datetime.now(UTC),
    )


def owed_but_missing(landed: list[Landed], letters: list[DeadLetter]) -> list[tuple[str, str]]:
    """Poison records owed a dead letter (with a reason) that have none: (record, text)."""
    found = {(d.source_topic, d.partition, d.offset) for d in letters if d.reason.strip()}
    missing = []
    for item in landed:
        where = f"{item.poison.topic}[{item.partition}]@{item.offset}"
        if item.poison.dead_letter_owed and (
            (item.poison.topic, item.partition, item.offset) not in found
        ):
            missing.append((where, f"{item.poison.kind} on {where}: no dead letter with a reason"))
    return missing
