"""Reading and re-submitting dead letters (``{prefix}.deadletters``).

Every agent writes the messages it cannot use to the dead-letter topic with the reason,
keyed like the original (by saga id). An operator lists the recent ones, fixes the cause
(deploys the missing definition, fixes the participant) and re-submits one: its original
bytes go back to the topic they came from, with the same key.

A dead letter is named by its position in the dead-letter topic, ``PARTITION:OFFSET``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from coordinator._errors import CommandError, SagaNotFoundError
from coordinator._settings import CoordinatorSettings
from coordinator._watch import partition_counts, partition_for
from coordinator.events import DeadLetter

__all__ = ["DeadLetterEntry", "DeadLetterLog", "matches", "parse_ref", "truncated"]

#: how dead letters written before ``DeadLetter.truncated`` existed said so, in the reason
_TRUNCATED = "value truncated"


def truncated(letter: DeadLetter) -> bool:
    """True when the dead letter keeps only the first bytes of the original value."""
    return letter.truncated or _TRUNCATED in letter.reason


def matches(letter: DeadLetter, payload: bytes) -> bool:
    """Whether ``letter`` is the dead letter of ``payload`` (or of its start, if truncated)."""
    kept = letter.value()
    return kept == payload or (truncated(letter) and bool(kept) and payload.startswith(kept))


@dataclass(frozen=True)
class DeadLetterEntry:
    """One dead letter and where it sits in the dead-letter topic."""

    partition: int
    offset: int
    letter: DeadLetter

    @property
    def ref(self) -> str:
        """``PARTITION:OFFSET``, the name ``dead-letters --resubmit`` takes."""
        return f"{self.partition}:{self.offset}"


def parse_ref(ref: str) -> tuple[int, int]:
    """``"3:17"`` -> ``(3, 17)``; raises :class:`CommandError` naming the expected form."""
    partition, sep, offset = ref.partition(":")
    if not (sep and partition.isdigit() and offset.isdigit()):
        raise CommandError(
            f"dead letter {ref!r}: name it PARTITION:OFFSET as `dead-letters` lists it, e.g. 3:17"
        )
    return int(partition), int(offset)


class DeadLetterLog:
    """The dead-letter topic of one coordinator deployment (``settings.topic_prefix``)."""

    def __init__(self, settings: CoordinatorSettings) -> None:
        self.settings = settings
        self.topic = settings.topics.deadletters

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
        )

    async def _partitions(self) -> list[int]:
        counts = await partition_counts(self.settings.kafka_bootstrap_servers, [self.topic])
        return list(range(counts[self.topic]))

    async def recent(
        self, *, saga_id: str | None = None, limit: int = 20, scan: int = 1000
    ) -> list[DeadLetterEntry]:
        """The latest ``limit`` dead letters, oldest first, of one saga or of all.

        Reads at most the last ``scan`` records of each partition it looks at (only the
        saga's own partition when ``saga_id`` is given).
        """
        consumer = self._consumer()
        await consumer.start()
        try:
            partitions = await self._partitions()
            if saga_id is not None:
                partitions = [partition_for(saga_id, len(partitions))]
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            begins = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, max(begins[tp], ends[tp] - scan))
            found: list[DeadLetterEntry] = []
            waiting = {tp for tp in tps if ends[tp] > begins[tp]}
            while waiting:
                batch = await consumer.getmany(*waiting, timeout_ms=1000)
                for tp, records in batch.items():
                    for record in records:
                        if record.offset >= ends[tp]:
                            continue
                        entry = _entry(tp.partition, record.offset, record.value)
                        if entry is not None and (saga_id is None or entry.letter.key == saga_id):
                            found.append(entry)
                waiting = {tp for tp in waiting if await consumer.position(tp) < ends[tp]}
        finally:
            await consumer.stop()
        found.sort(key=lambda e: (e.letter.occurred_at, e.partition, e.offset))
        return found[-limit:] if limit else found

    async def get(self, ref: str) -> DeadLetterEntry:
        """The dead letter at ``PARTITION:OFFSET``; raises if there is none."""
        partition, offset = parse_ref(ref)
        consumer = self._consumer()
        await consumer.start()
        try:
            partitions = await self._partitions()
            if partition not in partitions:
                raise SagaNotFoundError(
                    f"dead letter {ref}: topic {self.topic!r} has partitions "
                    f"0..{len(partitions) - 1}"
                )
            tp = TopicPartition(self.topic, partition)
            consumer.assign([tp])
            begin = (await consumer.beginning_offsets([tp]))[tp]
            end = (await consumer.end_offsets([tp]))[tp]
            if not begin <= offset < end:
                raise SagaNotFoundError(
                    f"dead letter {ref}: partition {partition} holds offsets {begin}..{end - 1}; "
                    "list them with `python -m coordinator dead-letters`"
                )
            consumer.seek(tp, offset)
            record = await consumer.getone(tp)
        finally:
            await consumer.stop()
        entry = _entry(partition, record.offset, record.value)
        if entry is None:
            raise CommandError(f"dead letter {ref}: the record is not a DeadLetter")
        return entry

    async def resubmit(self, ref: str) -> DeadLetterEntry:
        """Send the dead letter's original bytes back to its source topic, same key."""
        entry = await self.get(ref)
        letter, topics = entry.letter, self.settings.topics
        if truncated(letter):
            raise CommandError(
                f"dead letter {ref} keeps only the start of the original message (it was too "
                "large), so it cannot be re-submitted; send the original again from its source"
            )
        ours = letter.source_topic in (topics.inbox, topics.lifecycle) or (
            letter.source_topic.startswith(topics.step(""))
        )
        if not ours:
            raise CommandError(
                f"dead letter {ref} came from {letter.source_topic!r}, not a saga topic of "
                f"prefix {topics.prefix!r}; it cannot be re-submitted"
            )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers, acks="all"
        )
        await producer.start()
        try:
            key = letter.key.encode() if letter.key is not None else None
            await producer.send_and_wait(letter.source_topic, letter.value(), key=key)
        finally:
            await producer.stop()
        return entry


def _entry(partition: int, offset: int, value: bytes | None) -> DeadLetterEntry | None:
    try:
        return DeadLetterEntry(partition, offset, DeadLetter.model_validate_json(value or b""))
    except ValidationError:
        return None
