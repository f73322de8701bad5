"""Raw Kafka records to lifecycle events, or to dead letters with the reason.

A record larger than ``max_event_bytes`` is a dead letter ("too large"), and a dead
letter never carries more than :data:`MAX_DEAD_LETTER_VALUE` bytes of the original value:
a 1 MB record copied whole into a dead letter is itself too large for the broker, and
the listener would retry sending it forever instead of going on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from coordinator.events import DEAD_LETTER_VALUE_LIMIT, DeadLetter
from listeners._events import Event, parse_any_event

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_DEAD_LETTER_VALUE",
    "RawRecord",
    "dead_letter",
    "decode_batch",
    "decode_record",
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
) -> Event | DeadLetter:
    """The lifecycle event in ``record``, or a dead letter saying why there is none.

    A well-formed event of a type the installed coordinator does not know is decoded
    as a :class:`~listeners._events.GenericEvent`, never dead-lettered.
    """
    if not record.value:
        return dead_letter(
            record, reason="empty message value", error_type="EmptyValue", agent=agent
        )
    if len(record.value) > max_bytes:
        reason = (
            f"record of {len(record.value)} bytes is larger than the listener's limit of "
            f"{max_bytes} bytes (LISTENER_MAX_EVENT_BYTES); lifecycle events are small, so "
            "this is not one"
        )
        return dead_letter(record, reason=reason, error_type="RecordTooLarge", agent=agent)
    try:
        event = parse_any_event(record.value)
    except ValidationError as exc:
        reason = f"not a valid lifecycle event: {exc}"
        return dead_letter(record, reason=reason, error_type="ValidationError", agent=agent)
    except ValueError as exc:  # pragma: no cover - pydantic reports bad JSON as above
        return dead_letter(record, reason=str(exc), error_type=type(exc).__name__, agent=agent)
    if record.key is not None and record.key != event.saga_id.encode():
        reason = (
            f"message key {record.key!r} is not the event's saga_id {event.saga_id!r}; "
            "lifecycle events must be keyed by saga_id so a saga stays on one partition"
        )
        return dead_letter(record, reason=reason, error_type="KeyMismatch", agent=agent)
    return event


def decode_batch(
    records: Iterable[RawRecord], *, agent: str, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> tuple[list[tuple[RawRecord, Event]], list[DeadLetter]]:
    """Decode a batch: ``([(record, event)] in order, dead letters)``."""
    events: list[tuple[RawRecord, Event]] = []
    dead: list[DeadLetter] = []
    for record in records:
        decoded = decode_record(record, agent=agent, max_bytes=max_bytes)
        if isinstance(decoded, DeadLetter):
            dead.append(decoded)
        else:
            events.append((record, decoded))
    return events, dead
