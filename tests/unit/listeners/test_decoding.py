"""Decoding: new event types are generic events, oversized records small dead letters."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from coordinator.events import DeadLetter
from listeners import GenericEvent
from listeners._decoding import MAX_DEAD_LETTER_VALUE, RawRecord, decode_record
from listeners._processor import BatchProcessor
from listeners.orders import OrderStatusListener, get_order
from tests.listener_events import order_saga


def _raw(value: bytes, key: bytes = b"s1", offset: int = 0) -> RawRecord:
    return RawRecord("saga.lifecycle", 0, offset, key, value)


def _envelope(**fields: object) -> bytes:
    event = {
        "event_id": "s1:2",
        "saga_id": "s1",
        "saga_type": "order_fulfillment",
        "saga_version": 1,
        "seq": 2,
        "occurred_at": "2026-01-01T00:00:01+00:00",
        **fields,
    }
    return json.dumps(event).encode()


def _processor(sessions: sessionmaker[Session], sink: Any) -> BatchProcessor:
    return BatchProcessor(
        listeners=[OrderStatusListener()],
        sessions=sessions,
        dead_letters=sink,
        agent="test",
        max_delay=timedelta(milliseconds=10),
    )


def test_a_well_formed_event_of_a_new_type_is_generic() -> None:
    value = _envelope(type="step_audited", step="ship", extra_field={"x": 1})
    [event] = decode_record(_raw(value), agent="a")
    assert isinstance(event, GenericEvent)
    assert (event.type, event.step, event.seq) == ("step_audited", "ship", 2)
    assert event.model_extra == {"extra_field": {"x": 1}}


def test_a_known_type_with_bad_fields_is_still_a_dead_letter() -> None:
    [letter] = decode_record(_raw(_envelope(type="step_failed", retrying="sometimes")), agent="a")
    assert isinstance(letter, DeadLetter) and letter.error_type == "ValidationError"


def test_a_new_type_without_the_envelope_or_with_naive_time_is_a_dead_letter() -> None:
    naive = _envelope(type="step_audited", occurred_at="2026-01-01T00:00:01")
    for value in (b'{"type": "step_audited", "saga_id": "s1"}', naive):
        [letter] = decode_record(_raw(value), agent="a")
        assert isinstance(letter, DeadLetter), value


def test_an_oversized_record_is_a_small_dead_letter() -> None:
    value = b"x" * (1024 * 1024)
    [letter] = decode_record(_raw(value), agent="a", max_bytes=512 * 1024)
    assert isinstance(letter, DeadLetter)
    assert letter.error_type == "RecordTooLarge"
    assert len(letter.value()) == MAX_DEAD_LETTER_VALUE
    assert letter.truncated and letter.original_size == 1024 * 1024
    assert len(letter.to_json()) < 100_000  # far below the broker's 1 MB message limit


async def test_the_listener_goes_on_after_oversized_and_new_type_records(
    sessions: sessionmaker[Session],
) -> None:
    letters: list[DeadLetter] = []

    async def sink(letter: DeadLetter) -> None:
        letters.append(letter)

    processor = _processor(sessions, sink)
    events = order_saga("s1", "completed", order_id="o1")
    parked = GenericEvent.model_validate_json(
        _envelope(type="step_late_success", event_id="s1:13", seq=13, step="ship")
    )
    records = [
        _raw(b"y" * (5 * 1024 * 1024), offset=0),
        *(_raw(e.to_json(), offset=i + 1) for i, e in enumerate(events)),
        _raw(parked.to_json(), offset=99),
    ]
    result = await processor.process(records)
    assert result.applied == len(events) + 1
    assert [letter.error_type for letter in letters] == ["RecordTooLarge"]
    with sessions() as session:
        order = get_order(session, "o1")
    assert order.status == "completed"  # a late success after completion changes no status
    assert order.timeline[-1].type == "step_late_success"


async def test_a_dead_letter_the_broker_refuses_is_sent_without_its_value(
    sessions: sessionmaker[Session],
) -> None:
    sent: list[DeadLetter] = []

    async def refusing(letter: DeadLetter) -> None:
        if letter.value_b64:
            raise RuntimeError("MessageSizeTooLargeError")
        sent.append(letter)

    processor = _processor(sessions, refusing)
    await processor.process([_raw(b"not json")])
    assert len(sent) == 1 and sent[0].value_b64 == "" and sent[0].reason
