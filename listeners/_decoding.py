"""Raw Kafka records to lifecycle events, or to dead letters with the reason.

A record carries one event or a batch of one saga's events (both forms:
:mod:`coordinator.events`); each event of a batch is decoded on its own, so one invalid
event is a dead letter (holding that event alone) and the others are applied.

A record larger than ``max_event_bytes`` is a dead letter ("too large"), and a dead
letter never carries more than :data:`MAX_DEAD_LETTER_VALUE` bytes of the original value:
a 1 MB record copied whole into a dead letter is itself too large for the broker, and
the listener would retry sending it forever instead of going on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from coordinator.events import (
    BATCH_SCHEMA_VERSION,
    DEAD_LETTER_VALUE_LIMIT,
    DeadLetter,
    EventBatch,
    LifecycleRecordError,
    parse_event,
    unpack_record,
)
from listeners._events import Event, validate_any_event

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_DEAD_LETTER_VALUE",
    "RawRecord",
    "dead_letter",
    "decode_batch",
    "decode_record",
    "event_record",
]

_MAX_REASON = 2000
#: Most bytes of the original value a dead letter keeps (base64 makes it 4/3 larger).
MAX_DEAD_LETTER_VALUE = DEAD_LETTER_VALUE_LIMIT
#: Default largest lifecycle record a listener decodes (``LISTENER_MAX_EVENT_BYTES``).
DEFAULT_MAX_EVENT_BYTES = 512 * 1024


@dataclass(frozen=True)
class RawRecord:
    """One record as read from Kafka, before decoding (whoever read it: Faust, aiokafka)."""

    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None
    #: the record is in the batch form: a dead letter for one of its events holds that
    #: event alone (see :func:`event_record`)
    batched: bool = False


def dead_letter(record: RawRecord, *, reason: str, error_type: str, agent: str) -> DeadLetter:
    """A dead letter keeping ``record`` (its first 64 KiB), with why it could not be used."""
    key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
    if key is not None and len(record.value or b"") > MAX_DEAD_LETTER_VALUE:
        key = key[:1000]
    return DeadLetter.of(
        record.value,
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key,
        reason=reason[:_MAX_REASON],
        error_type=error_type,
        agent=agent,
        occurred_at=datetime.now(UTC),
    )


def decode_record(
    record: RawRecord, *, agent: str, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> list[Event | DeadLetter]:
    """The lifecycle events in ``record`` (one, or a batch's), each or a dead letter saying why.

    A record in the batch form (:class:`coordinator.events.EventBatch`) yields its
    events in order; an invalid one inside becomes a dead letter of its own, holding that
    event alone (re-submitting it sends it in the single form), and the others are used.
    A well-formed event of a type the installed coordinator does not know is decoded as a
    :class:`~listeners._events.GenericEvent`, never dead-lettered.
    """
    return _decode(record, agent=agent, max_bytes=max_bytes)[1]


def _decode(
    record: RawRecord, *, agent: str, max_bytes: int
) -> tuple[RawRecord, list[Event | DeadLetter]]:
    """``decode_record``, and the record its events came from (marked ``batched``)."""
    if not record.value:
        letter = dead_letter(
            record, reason="empty message value", error_type="EmptyValue", agent=agent
        )
        return record, [letter]
    if len(record.value) > max_bytes:
        reason = (
            f"record of {len(record.value)} bytes is larger than the listener's limit of "
            f"{max_bytes} bytes (LISTENER_MAX_EVENT_BYTES); lifecycle records are small, so "
            "this is not one"
        )
        return record, [
            dead_letter(record, reason=reason, error_type="RecordTooLarge", agent=agent)
        ]
    fast = _decode_valid(record)
    if fast is not None:
        return fast
    try:
        batch_of, items = unpack_record(record.value)
    except LifecycleRecordError as exc:
        reason = f"not a valid lifecycle event: {exc}"
        return record, [
            dead_letter(record, reason=reason, error_type="ValidationError", agent=agent)
        ]
    if batch_of is None:
        return record, [_decode_one(record, items[0], agent=agent, where="")]
    if record.key is not None and record.key != batch_of.encode():
        reason = (
            f"message key {record.key!r} is not the batch's saga_id {batch_of!r}; "
            "lifecycle records must be keyed by saga_id so a saga stays on one partition"
        )
        return record, [dead_letter(record, reason=reason, error_type="KeyMismatch", agent=agent)]
    member = replace(record, key=batch_of.encode(), batched=True)
    return member, [
        _decode_one(member, item, agent=agent, where=f"event {i} of {len(items)} of a batch: ")
        for i, item in enumerate(items, 1)
    ]


def _decode_valid(record: RawRecord) -> tuple[RawRecord, list[Event | DeadLetter]] | None:
    """A record whose events are all valid and known, decoded straight from its bytes.

    The common case, and cheaper. None if anything is off: ``_decode`` then looks at each
    event to say what, dead-letters only that one, and decodes new types as generic events.
    """
    value = record.value or b""
    key = record.key
    try:
        if b'"events"' not in value:
            event = parse_event(value)
            return None if key is not None and key != event.saga_id.encode() else (record, [event])
        batch = EventBatch.model_validate_json(value)
    except ValidationError:
        return None
    key_of = batch.saga_id.encode()
    if not 1 <= batch.schema_version <= BATCH_SCHEMA_VERSION or (key is not None and key != key_of):
        return None
    if any(event.saga_id != batch.saga_id for event in batch.events):
        return None
    # built directly: dataclasses.replace costs several times more, once per record
    member = RawRecord(record.topic, record.partition, record.offset, key_of, value, True)
    return member, list(batch.events)


def _decode_one(record: RawRecord, item: Any, *, agent: str, where: str) -> Event | DeadLetter:
    try:
        event = validate_any_event(item)
    except ValidationError as exc:
        reason = f"{where}not a valid lifecycle event: {exc}"
        return dead_letter(
            _alone(record, item), reason=reason, error_type="ValidationError", agent=agent
        )
    if record.key is not None and record.key != event.saga_id.encode():
        reason = (
            f"{where}message key {record.key!r} is not the event's saga_id {event.saga_id!r}; "
            "lifecycle events must be keyed by saga_id so a saga stays on one partition"
        )
        return dead_letter(
            _alone(record, item), reason=reason, error_type="KeyMismatch", agent=agent
        )
    return event


def _alone(record: RawRecord, item: Any) -> RawRecord:
    """The record to dead-letter for one event: the record itself, or that event of a batch."""
    if not record.batched:
        return record
    return replace(record, value=json.dumps(item, separators=(",", ":")).encode())


def event_record(record: RawRecord, event: Event) -> RawRecord:
    """The record to dead-letter for ``event``: ``record``, or the event alone if batched."""
    return replace(record, value=event.to_json()) if record.batched else record


def decode_batch(
    records: Iterable[RawRecord], *, agent: str, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> tuple[list[tuple[RawRecord, Event]], list[DeadLetter]]:
    """Decode a batch: ``([(record, event)] in order, dead letters)``.

    The events of a batch record are paired with that record marked ``batched``.
    """
    events: list[tuple[RawRecord, Event]] = []
    dead: list[DeadLetter] = []
    for record in records:
        source, decoded = _decode(record, agent=agent, max_bytes=max_bytes)
        for item in decoded:
            if isinstance(item, DeadLetter):
                dead.append(item)
            else:
                events.append((source, item))
    return events, dead
