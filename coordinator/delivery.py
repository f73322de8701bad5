"""Sending records and knowing they arrived: every send's delivery is awaited.

``deliver`` sends a group of records at once (one broker round trip for all of them),
awaits each acknowledgement, and re-sends only the ones that failed, in place, until
every one is acknowledged. Nothing is logged and forgotten.

Errors are classified:

* the broker is unavailable or slow (any other ``KafkaError``): retried in place with
  backoff, holding only the caller's partition;
* a record too large for the broker (``MessageSizeTooLargeError``,
  ``RecordTooLargeError``): never transient. The shell checks sizes before sending
  (``SAGA_MAX_RECORD_BYTES``), so this means the broker's limit is lower than ours: it
  is retried in place with an error naming the setting to lower.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from faust.exceptions import ProducerSendError

log = logging.getLogger("coordinator.delivery")

TOO_LARGE: tuple[type[BaseException], ...] = (MessageSizeTooLargeError, RecordTooLargeError)


class Abandoned(Exception):
    """The partition was taken away (rebalance, shutdown) while its work was retried."""


class Producer(Protocol):
    """Faust's producer ``send``: enqueue, returning the delivery future."""

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
    ) -> Awaitable[Any]:
        """Enqueue a record; the returned awaitable resolves when the broker acks it."""
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
    """Retry-in-place pacing; raises ``Abandoned`` once ``stopping()`` says so."""

    def __init__(self, stopping: Callable[[], bool], *, first: float = 0.1, cap: float = 5.0):
        self.stopping = stopping
        self.delay = first
        self.cap = cap

    async def wait(self) -> None:
        """Sleep before the next attempt; raises ``Abandoned`` if the caller must stop."""
        if self.stopping():
            raise Abandoned()
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.cap)
        if self.stopping():
            raise Abandoned()


async def deliver(
    producer: Producer, records: list[Record], backoff: Backoff, *, what: str
) -> list[Any]:
    """Send ``records`` and await every acknowledgement; returns their metadata in order.

    All are sent at once. If any fails, everything from the first failure on is sent
    again one record at a time (a later record of the same saga must not stay ahead of
    an earlier one: consumers keep the newest ``seq``), until acknowledged. Raises
    ``Abandoned`` if the caller's partition is taken away meanwhile.
    """
    results: list[Any] = [None] * len(records)
    first = await _send_all(producer, records, results)
    while first is not None:
        await backoff.wait()
        first = await _send_each(producer, records, results, first, what, backoff)
    return results


async def _send_all(producer: Producer, records: list[Record], results: list[Any]) -> int | None:
    """Send all at once; the index of the first failure, if any."""
    pending: list[Awaitable[Any] | BaseException] = []
    for r in records:
        try:
            pending.append(await producer.send(r.topic, r.key, r.value, r.partition, None, None))
        except Exception as exc:
            pending.append(_retryable(exc))
    first: int | None = None
    for i, fut in enumerate(pending):
        try:
            if isinstance(fut, BaseException):
                raise fut
            results[i] = await fut
        except Exception as exc:
            _retryable(exc)
            first = i if first is None else first
    if first is not None:
        log.warning("%d records: delivery failed from #%d on; re-sending", len(records), first)
    return first


async def _send_each(
    producer: Producer,
    records: list[Record],
    results: list[Any],
    start: int,
    what: str,
    backoff: Backoff,
) -> int | None:
    for i in range(start, len(records)):
        r = records[i]
        try:
            fut = await producer.send(r.topic, r.key, r.value, r.partition, None, None)
            results[i] = await fut
        except Exception as exc:
            _log_failure(what, len(records) - i, len(records), _retryable(exc), backoff.delay)
            return i
    return None


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
