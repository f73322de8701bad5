"""Rebuild a listener database from the beginning of the lifecycle topic.

A plain aiokafka consumer (no consumer group, so the live worker's offsets are not
touched) reads every partition from its first offset up to the end offsets captured at
start, through the same :class:`~listeners.processor.BatchProcessor` the worker uses.
Because applying is idempotent and ordered by ``seq``, the rebuilt database ends in the
state the live one had at those offsets. Replay into a fresh database (or stop the
worker first): it clears the listeners' tables before it starts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from coordinator.events import DeadLetter
from listeners.builtin import default_listeners
from listeners.db import create_db_engine, session_factory
from listeners.decoding import RawRecord
from listeners.errors import ReplayError
from listeners.framework import Listener
from listeners.migrations import upgrade
from listeners.processor import BatchProcessor
from listeners.settings import ListenerSettings

__all__ = ["ReplayReport", "replay"]

log = logging.getLogger(__name__)


@dataclass
class ReplayReport:
    """What a replay read and applied.

    Attributes:
        records: Records read from the lifecycle topic.
        applied: Events that changed business state.
        stale: Events skipped as not newer than the stored ``seq`` (duplicates).
        ignored: Events of saga or event types no listener handles.
        dead_letters: Records that could not be used (the live worker dead-lettered them).
        end_offsets: Offset each partition was replayed up to (exclusive).
    """

    records: int = 0
    applied: int = 0
    stale: int = 0
    ignored: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    end_offsets: dict[int, int] = field(default_factory=dict)


async def replay(
    settings: ListenerSettings,
    *,
    database_url: str | None = None,
    listeners: Sequence[Listener[Any]] | None = None,
) -> ReplayReport:
    """Clear the listener database and apply the whole lifecycle topic to it.

    Args:
        settings: Topic prefix, broker and batch size (and the database by default).
        database_url: Database to rebuild, instead of ``settings.database_url``. It is
            migrated to head first.
        listeners: Defaults to the built-in listeners configured from ``settings``.

    Raises:
        ReplayError: The broker is unreachable or the lifecycle topic does not exist.
    """
    url = database_url or settings.database_url
    listeners = list(listeners) if listeners is not None else default_listeners(settings)
    upgrade(url)
    engine = create_db_engine(url)
    sessions = session_factory(engine)
    report = ReplayReport()

    async def keep(letter: DeadLetter) -> None:
        report.dead_letters.append(letter)

    processor = BatchProcessor(
        listeners=listeners,
        sessions=sessions,
        dead_letters=keep,
        agent=f"{settings.app_id}.replay",
        max_delay=settings.retry_max_delay,
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await consumer.start()
    except KafkaError as exc:
        engine.dispose()
        raise ReplayError(
            f"cannot reach Kafka at {settings.kafka_bootstrap_servers} ({exc}); "
            "start it (make kafka-up) or set KAFKA_BOOTSTRAP_SERVERS"
        ) from exc
    try:
        with sessions() as session, session.begin():
            for listener in listeners:
                listener.reset(session)
        await _consume(consumer, settings, processor, report)
    finally:
        await consumer.stop()
        engine.dispose()
    stats = processor.stats
    report.records, report.applied = stats.records, stats.applied
    report.stale, report.ignored = stats.stale, stats.ignored
    return report


async def _consume(
    consumer: AIOKafkaConsumer,
    settings: ListenerSettings,
    processor: BatchProcessor,
    report: ReplayReport,
) -> None:
    topic = settings.lifecycle_topic
    partitions = await _partitions(settings.kafka_bootstrap_servers, topic)
    if not partitions:
        raise ReplayError(
            f"lifecycle topic {topic!r} does not exist on {settings.kafka_bootstrap_servers}; "
            "check LISTENER_TOPIC_PREFIX (it must match the coordinator's)"
        )
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    end = await consumer.end_offsets(tps)
    report.end_offsets = {tp.partition: end[tp] for tp in tps}
    remaining = {tp for tp in tps if await consumer.position(tp) < end[tp]}
    log.info("replaying %s up to %s", topic, report.end_offsets)
    while remaining:
        fetched = await consumer.getmany(
            *remaining, timeout_ms=1000, max_records=settings.batch_size
        )
        records = [
            RawRecord(topic, m.partition, m.offset, m.key, m.value)
            for tp, messages in fetched.items()
            for m in messages
            if m.offset < end[tp]
        ]
        if records:
            await processor.process(records)
        for tp in list(remaining):
            if await consumer.position(tp) >= end[tp]:
                remaining.discard(tp)
                consumer.pause(tp)


async def _partitions(bootstrap: str, topic: str) -> list[int]:
    """Partition ids of ``topic`` (empty if it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [
        int(partition["partition"])
        for entry in described
        if entry.get("topic") == topic and entry.get("error_code") == 0
        for partition in entry.get("partitions", [])
    ]
