"""In-memory stand-ins for the broker side of the coordinator shell (no Kafka)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import KafkaConnectionError

from coordinator import CoordinatorSettings, SagaRegistry
from coordinator._deadlines import DeadlineIndex
from coordinator._executor import StepExecutor
from coordinator._inbox import InboxProcessor
from coordinator._messages import StartSaga
from coordinator._routing import partition_for
from coordinator.events import unpack_record

AT = datetime(2026, 1, 1, tzinfo=UTC)
PARTITIONS = 4
CHANGELOG = "app-saga-state-changelog"


@dataclass
class FakeMessage:
    key: bytes | None
    value: bytes
    partition: int
    offset: int
    topic: str = "t.inbox"


@dataclass
class FakeEvent:
    message: FakeMessage
    acked: bool = False

    def ack(self) -> bool:
        self.acked = True
        return True


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    offset: int = -1  # given when the broker acknowledges it (per topic and partition)

    def body(self) -> Any:
        return json.loads(self.value)

    def events(self) -> list[Any]:
        """The lifecycle events this record carries (one, or a batch's), as JSON values."""
        return unpack_record(self.value)[1]


@dataclass
class Batch:
    """What ``send_batch`` resolves to: the offset of the batch's first record."""

    offset: int


class FakeProducer:
    """Records sends (a batch is stored all or none); can fail the next N batches sent to a
    topic, or hold acknowledgements until released."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []  # acknowledged, in order of acknowledgement
        self.enqueued: list[Sent] = []
        self.failures: dict[str, int] = {}
        self.hold = False
        self.hold_partitions: set[int] = set()  # hold only batches to these partitions
        self._held: list[tuple[asyncio.Future[Any], list[Sent]]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes | None, *rest: Any) -> Any:
        partition = rest[0] if rest and rest[0] is not None else await self.partition_of(topic, key)
        return await self.send_batch(topic, partition, [(key, value)])

    async def partition_of(self, topic: str, key: bytes | None) -> int:
        return 0 if key is None else partition_for(key.decode(errors="replace"), PARTITIONS)

    async def send_batch(
        self, topic: str, partition: int, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> Any:
        batch = [Sent(topic, key, value or b"", partition) for key, value in records]
        self.enqueued.extend(batch)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.failures.get(topic):
            self.failures[topic] -= 1
            fut.set_exception(KafkaConnectionError(f"broker down ({topic})"))
        elif self.hold or partition in self.hold_partitions:
            self._held.append((fut, batch))
        else:
            self._ack(fut, batch)
        return fut

    def _ack(self, fut: asyncio.Future[Any], batch: list[Sent]) -> None:
        first = batch[0]
        offset = sum(
            1 for s in self.sent if (s.topic, s.partition) == (first.topic, first.partition)
        )
        for i, record in enumerate(batch):
            record.offset = offset + i
        self.sent.extend(batch)
        fut.set_result(Batch(offset))

    def release(self) -> None:
        self.hold = False
        self.hold_partitions = set()
        held, self._held = self._held, []
        for fut, batch in held:
            self._ack(fut, batch)

    def to(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic]


class DictStore(dict[str, bytes]):
    """The local store: records by saga id, and the changelog offset applied per partition."""

    def __init__(self) -> None:
        super().__init__()
        self.offsets: dict[int, int | None] = {}

    def write(
        self, partition: int, records: Mapping[str, bytes | None], offset: int | None
    ) -> None:
        for saga_id, raw in records.items():
            if raw is None:
                self.pop(saga_id, None)
            else:
                self[saga_id] = raw
        self.offsets[partition] = offset


def settings(**overrides: Any) -> CoordinatorSettings:
    return CoordinatorSettings(
        topic_prefix="t", partitions=PARTITIONS, web_enabled=False, **overrides
    )


def processor(
    registry: SagaRegistry,
    producer: FakeProducer | None = None,
    store: DictStore | None = None,
    **overrides: Any,
) -> InboxProcessor:
    s = settings(**overrides)
    services = registry.services()
    proc = InboxProcessor(
        s,
        registry,
        producer or FakeProducer(),
        store if store is not None else DictStore(),
        DeadlineIndex(),
        StepExecutor(registry),
        {n for n, svc in services.items() if svc.inline},
    )
    proc.changelog = CHANGELOG
    return proc


class Inbox:
    """Builds inbox events with increasing offsets, each on its saga's partition."""

    def __init__(self) -> None:
        self.offset = 0

    def event(self, saga_id: str, value: bytes, *, partition: int | None = None) -> FakeEvent:
        self.offset += 1
        p = partition_for(saga_id, PARTITIONS) if partition is None else partition
        return FakeEvent(FakeMessage(saga_id.encode(), value, p, self.offset))


def start(saga_type: str, saga_id: str, **input: Any) -> bytes:
    return StartSaga(saga_id=saga_id, at=AT, saga_type=saga_type, input=input).to_json()


def never() -> bool:
    return False


def leased(worker: Any, generation: int = 1) -> None:
    """Give a ``Coordinator`` the membership lease of ``generation`` (a heartbeat was just
    answered): without one, its lanes, expiry and timers wait (``coordinator._lease``)."""
    worker.membership.assigned = generation
    worker.membership.renewed(worker.membership.clock(), generation)
