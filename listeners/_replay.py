"""Rebuild listener tables from the lifecycle topic into a fresh database, then swap.

The live database is never wiped. A replay:

1. refuses when a partition of the lifecycle topic no longer starts at offset 0
   (retention or compaction deleted events: the rebuilt state would miss them), unless
   forced;
2. builds the listeners' tables in a **fresh** database (``into``, or a new one next to
   the live one: ``live.replay-<time>.db`` for SQLite, ``<db>_replay_<time>`` on the same
   PostgreSQL server), migrated to head, by reading every partition from its first
   offset through the same :class:`~listeners._processor.BatchProcessor` the worker uses,
   with a plain consumer (no group: the worker's offsets are not touched);
3. swaps (unless ``swap=False``): it requires that no worker of the listeners' consumer
   group (``LISTENER_APP_ID``) runs, catches up to the topic's new end, then renames the
   live database to ``...before-replay-<time>`` and the fresh one to the live name.
   Restarted workers resume from their committed offsets, which are not beyond what the
   fresh database holds; events applied twice are stale and change nothing.
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
from listeners._databases import (
    drop_database,
    fresh_database,
    held_listeners,
    is_fresh,
    swap_databases,
)
from listeners._db import create_db_engine, hide_password, session_factory
from listeners._declarative import Listener
from listeners._decoding import RawRecord
from listeners._errors import ReplayError
from listeners._migrations import upgrade
from listeners._processor import BatchProcessor
from listeners._registry import load_listeners
from listeners._settings import ListenerSettings

__all__ = ["ReplayReport", "replay"]

log = logging.getLogger(__name__)


@dataclass
class ReplayReport:
    """What a replay read and applied.

    Attributes:
        records: Records read from the lifecycle topic.
        applied: Events that changed business state.
        stale: Events skipped as not newer than the stored ``seq`` (duplicates).
        ignored: Events of saga types no listener handles.
        dead_letters: Records that could not be used (the live worker dead-lettered them).
        end_offsets: Offset each partition was replayed up to (exclusive).
        start_offsets: First offset each partition still held.
        built: URL of the database the replay built (passwords hidden).
        live: URL of the live database (passwords hidden).
        swapped: Whether the built database now has the live name.
        previous: Where the live database went when swapped (kept, never deleted).
    """

    records: int = 0
    applied: int = 0
    stale: int = 0
    ignored: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    end_offsets: dict[int, int] = field(default_factory=dict)
    start_offsets: dict[int, int] = field(default_factory=dict)
    built: str = ""
    live: str = ""
    swapped: bool = False
    previous: str = ""

    def summary(self) -> str:
        """What happened, for the CLI."""
        lines = [
            f"replayed {self.records} records up to offsets {self.end_offsets} into {self.built}: "
            f"applied {self.applied}, stale {self.stale}, ignored {self.ignored}, "
            f"dead letters {len(self.dead_letters)}"
        ]
        if self.swapped:
            lines.append(
                f"swapped: {self.live} is the rebuilt database; the old one is {self.previous}"
            )
        elif self.built != self.live:
            lines.append(
                f"not swapped: {self.live} is unchanged; point the workers at {self.built} "
                "or run replay again without --no-swap while they are stopped"
            )
        return "\n".join(lines)


async def replay(
    settings: ListenerSettings,
    *,
    listeners: Sequence[Listener[Any]] | None = None,
    database_url: str | None = None,
    into: str | None = None,
    swap: bool = True,
    force: bool = False,
) -> ReplayReport:
    """Rebuild ``listeners`` from the lifecycle topic into a fresh database (and swap).

    Args:
        settings: Topic prefix, broker, batch size, app id (the workers' group).
        listeners: Defaults to ``settings.listeners``; they must share one database.
        database_url: The live database, instead of the listeners' configured one.
        into: The fresh database to build; created next to the live one if not given.
            It must not hold any of the listeners' tables yet.
        swap: Swap the built database in under the live name when done.
        force: Replay even if the topic no longer holds its beginning.

    Raises:
        ReplayError: The broker is unreachable, the topic is missing or lost its
            beginning, the target is not fresh, or workers still run during a swap.
    """
    listeners = list(listeners) if listeners is not None else load_listeners([], settings)
    urls = {database_url or settings.database_url_of(item.name) for item in listeners}
    if len(urls) != 1:
        raise ReplayError(
            f"listeners {[item.name for item in listeners]} live in {len(urls)} databases; "
            "replay one database's listeners at a time"
        )
    live = urls.pop()
    if swap:
        _require_all_named(live, listeners)
    report = ReplayReport()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await consumer.start()
    except KafkaError as exc:
        raise ReplayError(
            f"cannot reach Kafka at {settings.kafka_bootstrap_servers} ({exc}); "
            "start it (make kafka-up) or set KAFKA_BOOTSTRAP_SERVERS"
        ) from exc
    try:
        tps = await _assign(consumer, settings, report, force=force)
        if swap:
            await _require_no_workers(settings)
        target = into or fresh_database(live)
        if into is not None and not is_fresh(target, listeners):
            raise ReplayError(
                f"database {_shown(target)} already holds tables of {[i.name for i in listeners]}; "
                "replay only into a fresh database: pass --into a new one, or drop it first"
            )
        report.built, report.live = _shown(target), _shown(live)
        try:
            await _build(consumer, tps, settings, listeners, target, report, swap=swap, live=live)
        except BaseException:
            if into is None:
                drop_database(target)  # ours and unfinished; the live one is untouched
            raise
        if swap and target != live:
            report.previous = _shown(swap_databases(live=live, fresh=target))
            report.swapped = True
    finally:
        await consumer.stop()
    return report


def _require_all_named(live: str, listeners: Sequence[Listener[Any]]) -> None:
    """Refuse a swap that would leave a listener the replay does not name in the old database.

    The swap replaces the whole database: the tables of a listener sharing it that is
    not replayed would stay behind, and its workers would find the live one empty.
    """
    unnamed = held_listeners(live) - {listener.name for listener in listeners}
    if unnamed:
        raise ReplayError(
            f"database {_shown(live)} also holds the tables of listener(s) {sorted(unnamed)} "
            "(their alembic_version_* tables), which this replay does not name: the swap "
            "replaces the whole database, so they would be left in the old one; name every "
            "listener whose tables it holds (module:attribute, or a built-in name)"
        )


async def _build(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    settings: ListenerSettings,
    listeners: list[Listener[Any]],
    target: str,
    report: ReplayReport,
    *,
    swap: bool,
    live: str,
) -> None:
    upgrade(target, listeners, rebuilt=live, swap=swap)
    engine = create_db_engine(target)
    try:
        processor = _processor(settings, listeners, engine, report)
        await _consume(consumer, tps, settings, processor, report)
        if swap:
            await _require_no_workers(settings)
            await _consume(consumer, tps, settings, processor, report)  # catch up
        _count(processor, report)
    finally:
        engine.dispose()


def _processor(
    settings: ListenerSettings, listeners: list[Listener[Any]], engine: Any, report: ReplayReport
) -> BatchProcessor:
    async def keep(letter: DeadLetter) -> None:
        report.dead_letters.append(letter)

    return BatchProcessor(
        listeners=listeners,
        sessions=session_factory(engine),
        dead_letters=keep,
        agent=f"{settings.app_id}.replay",
        max_delay=settings.retry_max_delay,
        max_event_bytes=settings.max_event_bytes,
    )


def _count(processor: BatchProcessor, report: ReplayReport) -> None:
    stats = processor.stats
    report.records, report.applied = stats.records, stats.applied
    report.stale, report.ignored = stats.stale, stats.ignored


async def _assign(
    consumer: AIOKafkaConsumer, settings: ListenerSettings, report: ReplayReport, *, force: bool
) -> list[TopicPartition]:
    topic = settings.lifecycle_topic
    partitions = await _partitions(settings.kafka_bootstrap_servers, topic)
    if not partitions:
        raise ReplayError(
            f"lifecycle topic {topic!r} does not exist on {settings.kafka_bootstrap_servers}; "
            "check LISTENER_TOPIC_PREFIX (it must match the coordinator's)"
        )
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    starts = await consumer.beginning_offsets(tps)
    report.start_offsets = {tp.partition: starts[tp] for tp in tps}
    lost = {p: offset for p, offset in report.start_offsets.items() if offset > 0}
    if lost and not force:
        raise ReplayError(
            f"lifecycle topic {topic!r} no longer holds its beginning (partition: first offset "
            f"{lost}): retention deleted events, so a rebuild would miss sagas; keep the topic "
            "forever (retention.ms=-1), or pass --force to rebuild from what is left"
        )
    await consumer.seek_to_beginning(*tps)
    return tps


async def _consume(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    settings: ListenerSettings,
    processor: BatchProcessor,
    report: ReplayReport,
) -> None:
    end = await consumer.end_offsets(tps)
    report.end_offsets = {tp.partition: end[tp] for tp in tps}
    remaining = {tp for tp in tps if await consumer.position(tp) < end[tp]}
    consumer.resume(*remaining)
    log.info("replaying %s up to %s", settings.lifecycle_topic, report.end_offsets)
    while remaining:
        fetched = await consumer.getmany(
            *remaining, timeout_ms=1000, max_records=settings.batch_size
        )
        records = [
            RawRecord(tp.topic, m.partition, m.offset, m.key, m.value)
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


async def _require_no_workers(settings: ListenerSettings) -> None:
    """Raise if a worker of the listeners' consumer group is running."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([settings.app_id])
    finally:
        await admin.close()
    for response in described:
        for group in response.to_object().get("groups", []):
            if group.get("group") == settings.app_id and group.get("members"):
                raise ReplayError(
                    f"{len(group['members'])} listener worker(s) of group {settings.app_id!r} "
                    "are running; stop them before a swap (or pass --no-swap to only build)"
                )


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


def _shown(url: str) -> str:
    return hide_password(create_db_engine(url).url)
