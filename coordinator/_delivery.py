"""Sending records and knowing they arrived, in order: every delivery is awaited.

``deliver`` sends a group of records and awaits every acknowledgement. Records are
grouped by destination partition; each partition's records go as whole batches
(``Producer.send_batch``: the broker appends a batch all or nothing), every partition
at once, so a group costs one broker round trip. A partition's next batch is sent only
once the one before is acknowledged, and a failed batch is re-sent in place before
anything after it: a later record of a partition never reaches the broker ahead of an
earlier one, whatever fails (consumers keep a saga's newest ``seq``: a record overtaken
by a later one would be a gap for them). Nothing is logged and forgotten.

Errors are classified:

* the broker is unavailable or slow (any other ``KafkaError``): retried in place with
  backoff, holding only the caller's partition;
* a record too large for the broker (``MessageSizeTooLargeError``,
  ``RecordTooLargeError``): never transient. A refused batch of several records is
  re-sent one record at a time (each acknowledged before the next); a single record
  refused means the broker's limit is lower than ours (``SAGA_MAX_RECORD_BYTES``): it
  is retried in place with an error naming the setting to lower.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from faust.exceptions import ProducerSendError

from coordinator._watch import murmur2

log = logging.getLogger("coordinator.delivery")

TOO_LARGE: tuple[type[BaseException], ...] = (MessageSizeTooLargeError, RecordTooLargeError)


class Abandoned(Exception):
    """The partition was taken away (rebalance, shutdown) while its work was retried."""


class Producer(Protocol):
    """What ``deliver`` needs of a Kafka producer (the app's aiokafka producer)."""

    async def partition_of(self, topic: str, key: bytes | None) -> int:
        """The partition the default partitioner picks for ``key`` on ``topic``."""
        ...

    async def send_batch(
        self, topic: str, partition: int, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> Awaitable[Any]:
        """Enqueue ``(key, value)`` records as one batch (the broker appends all or none).

        The returned awaitable resolves, once the broker acknowledged the batch, to its
        metadata: ``offset`` is the offset of the first record.
        """
        ...


@dataclass(frozen=True)
class Record:
    """One record to send (``partition`` None: the key's default partition)."""

    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone
    partition: int | None = None


def root_cause(exc: BaseException) -> BaseException:
    """Return the broker's error under Faust's ``ProducerSendError`` wrapper."""
    while isinstance(exc, ProducerSendError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def is_too_large(exc: BaseException) -> bool:
    """Whether the broker (or the producer) refused a record for its size."""
    return isinstance(root_cause(exc), TOO_LARGE)


def is_transient(exc: BaseException) -> bool:
    """Broker trouble worth retrying in place (never a record too large)."""
    cause = root_cause(exc)
    return isinstance(cause, KafkaError | ProducerSendError) and not is_too_large(cause)


class Backoff:
    """Retry-in-place pacing; raises ``Abandoned`` once ``stopping()`` says so.

    ``hold``: awaited before each new attempt, after the pause (a changelog write is
    tried again only under the membership lease: ``coordinator._lease``).
    """

    def __init__(
        self,
        stopping: Callable[[], bool],
        *,
        first: float = 0.1,
        cap: float = 5.0,
        hold: Callable[[], Awaitable[None]] | None = None,
    ):
        self.stopping = stopping
        self.delay = first
        self.cap = cap
        self.hold = hold

    async def wait(self) -> None:
        """Sleep before the next attempt; raises ``Abandoned`` if the caller must stop."""
        if self.stopping():
            raise Abandoned()
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.cap)
        if self.stopping():
            raise Abandoned()
        if self.hold is not None:
            await self.hold()


#: a partition's records are sent in batches of at most this many bytes (a bigger record
#: goes alone); under the broker's default ``message.max.bytes`` (1 MiB)
BATCH_BYTES = 256 * 1024


#: the producer's batch buffer (aiokafka ``max_batch_size``): a batch of ``deliver`` (at
#: most BATCH_BYTES, or one record up to SAGA_MAX_RECORD_BYTES) always fits
BATCH_BUFFER = 2 * BATCH_BYTES


class AiokafkaBatches:
    """``Producer.partition_of`` and ``send_batch`` over an aiokafka producer.

    The producer must be created with ``max_batch_size >= BATCH_BUFFER``.
    """

    def __init__(self, producer: Callable[[], AIOKafkaProducer | None]) -> None:
        self._producer = producer
        self._partitioner = DefaultPartitioner()

    def _aiokafka(self) -> AIOKafkaProducer:
        producer = self._producer()
        if producer is None:
            raise RuntimeError("the Kafka producer is not started yet")
        return producer

    async def partition_of(self, topic: str, key: bytes | None) -> int:
        """The partition aiokafka's default partitioner (murmur2) picks for ``key``."""
        producer = self._aiokafka()
        partitions = sorted(await producer.partitions_for(topic))
        if key is not None:  # what the default partitioner does, with a faster murmur2
            return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        available = producer.client.cluster.available_partitions_for_topic(topic)
        return int(self._partitioner(key, partitions, sorted(available or partitions)))

    async def send_batch(
        self, topic: str, partition: int, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> Awaitable[Any]:
        """Enqueue ``records`` as one closed batch: the broker appends all or none."""
        producer = self._aiokafka()
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise RuntimeError(
                    f"{len(records)} records do not fit one producer batch: create the "
                    f"producer with max_batch_size >= {BATCH_BUFFER}"
                )
        batch.close()  # nothing else joins it: all of it or none reaches the topic
        return cast(Awaitable[Any], await producer.send_batch(batch, topic, partition=partition))


@dataclass(frozen=True)
class Ack:
    """Where the broker stored a record."""

    topic: str
    partition: int
    offset: int | None


async def deliver(
    producer: Producer, records: list[Record], backoff: Backoff, *, what: str
) -> list[Ack]:
    """Send ``records`` and await every acknowledgement; returns where each was stored.

    Per destination partition, in order, batch after acknowledged batch; all partitions
    at once. Raises ``Abandoned`` if the caller's partition is taken away meanwhile.
    """
    results: list[Ack | None] = [None] * len(records)
    groups: dict[tuple[str, int], list[int]] = {}
    keyed: dict[tuple[str, bytes | None], int] = {}  # a saga's records share a key
    for i, r in enumerate(records):
        p = r.partition
        if p is None:
            p = keyed.get((r.topic, r.key))
            if p is None:
                p = keyed[r.topic, r.key] = await producer.partition_of(r.topic, r.key)
        groups.setdefault((r.topic, p), []).append(i)
    partitions = [
        _Partition(producer, records, results, topic, p, indexes, backoff, what)
        for (topic, p), indexes in groups.items()
    ]
    if len(partitions) == 1:
        await partitions[0].deliver()
    else:
        await _all(partitions)
    return [r for r in results if r is not None]


async def _all(partitions: list[_Partition]) -> None:
    """Deliver every partition's records at once; the first error stops the others."""
    tasks = [asyncio.ensure_future(p.deliver()) for p in partitions]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise cast(BaseException, task.exception())


@dataclass
class _Partition:
    """One destination partition's records of a ``deliver`` call."""

    producer: Producer
    records: list[Record]
    results: list[Ack | None]
    topic: str
    partition: int
    indexes: list[int]
    backoff: Backoff
    what: str

    def __post_init__(self) -> None:
        b = self.backoff  # its own pacing: partitions fail and recover independently
        self.backoff = Backoff(b.stopping, first=b.delay, cap=b.cap, hold=b.hold)

    async def deliver(self) -> None:
        for chunk in _chunks(self.records, self.indexes):
            await self._send(chunk)

    async def _send(self, chunk: list[int]) -> None:
        """Send ``chunk`` as one batch until acknowledged (a refused big batch: one by one)."""
        while True:
            try:
                batch = [(self.records[i].key, self.records[i].value) for i in chunk]
                meta = await (await self.producer.send_batch(self.topic, self.partition, batch))
                first = getattr(meta, "offset", None)
                for n, i in enumerate(chunk):
                    offset = None if not isinstance(first, int) else first + n
                    self.results[i] = Ack(self.topic, self.partition, offset)
                return
            except Exception as exc:
                cause = _retryable(exc)
                if len(chunk) > 1 and is_too_large(cause):
                    log.warning(
                        "%s: a batch of %d records to %s[%d] was refused as too large (%r); "
                        "sending them one at a time",
                        self.what,
                        len(chunk),
                        self.topic,
                        self.partition,
                        cause,
                    )
                    for i in chunk:  # each acknowledged before the next: order is kept
                        await self._send([i])
                    return
                _log_failure(self.what, len(chunk), len(self.indexes), cause, self.backoff.delay)
                await self.backoff.wait()


def _chunks(records: list[Record], indexes: list[int]) -> list[list[int]]:
    """``indexes`` in order, cut into batches of at most ``BATCH_BYTES``."""
    chunks: list[list[int]] = []
    size = BATCH_BYTES
    for i in indexes:
        r = records[i]
        n = len(r.key or b"") + len(r.value or b"") + 64  # record overhead, generously
        if size + n > BATCH_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(i)
        size += n
    return chunks


def _retryable(exc: BaseException) -> BaseException:
    """``exc`` if it is broker trouble or a record too large; anything else is a bug."""
    if is_transient(exc) or is_too_large(exc):
        return exc
    raise exc


def _log_failure(what: str, n: int, total: int, exc: BaseException, delay: float) -> None:
    """Log why ``n`` of ``total`` records wait for a re-send."""
    cause = root_cause(exc)
    if is_too_large(cause):
        log.error(
            "%s: the broker refused %d of %d records as too large (%r); lower "
            "SAGA_MAX_RECORD_BYTES / SAGA_MAX_REQUEST_BYTES below the topics' "
            "max.message.bytes (retrying in %.1fs)",
            what,
            n,
            total,
            cause,
            delay,
        )
    else:
        log.warning(
            "%s: %d of %d records not acknowledged (%r); Kafka unavailable? retrying in %.1fs",
            what,
            n,
            total,
            cause,
            delay,
        )
