"""Raw Kafka records to lifecycle events, or to dead letters with the reason."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from coordinator.events import DeadLetter, LifecycleEvent, parse_event

__all__ = ["RawRecord", "dead_letter", "decode_batch", "decode_record"]

_MAX_REASON = 2000


@dataclass(frozen=True)
class RawRecord:
    """One record as read from Kafka, before decoding (whoever read it: Faust, aiokafka)."""

    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None


def dead_letter(record: RawRecord, *, reason: str, error_type: str, agent: str) -> DeadLetter:
    """A dead letter keeping ``record`` byte for byte, with why it could not be used."""
    key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
    return DeadLetter(
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key,
        value_b64=DeadLetter.encode_value(record.value),
        reason=reason[:_MAX_REASON],
        error_type=error_type,
        agent=agent,
        occurred_at=datetime.now(UTC),
    )


def decode_record(record: RawRecord, *, agent: str) -> LifecycleEvent | DeadLetter:
    """The lifecycle event in ``record``, or a dead letter saying why there is none."""
    if not record.value:
        return dead_letter(
            record, reason="empty message value", error_type="EmptyValue", agent=agent
        )
    try:
        event = parse_event(record.value)
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
    records: Iterable[RawRecord], *, agent: str
) -> tuple[list[tuple[RawRecord, LifecycleEvent]], list[DeadLetter]]:
    """Decode a batch: ``([(record, event)] in order, dead letters)``."""
    events: list[tuple[RawRecord, LifecycleEvent]] = []
    dead: list[DeadLetter] = []
    for record in records:
        decoded = decode_record(record, agent=agent)
        if isinstance(decoded, DeadLetter):
            dead.append(decoded)
        else:
            events.append((record, decoded))
    return events, dead
