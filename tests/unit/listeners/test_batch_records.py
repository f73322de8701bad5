"""Lifecycle records in the batch form: every valid event applied, each invalid one a
dead letter of its own, regrouped re-sends absorbed by the seq guard."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from coordinator.events import DeadLetter, EventBatch, parse_event
from listeners import BatchResult
from listeners._decoding import RawRecord
from listeners._processor import BatchProcessor
from listeners.orders import OrderStatusListener, get_order
from tests.listener_events import order_saga


def _batch(events: list[Any], offset: int = 0, **envelope: Any) -> RawRecord:
    saga_id = events[0].saga_id if events else "s1"
    value = EventBatch(saga_id=saga_id, events=events).to_json()
    if envelope:
        value = json.dumps({**json.loads(value), **envelope}).encode()
    return RawRecord("saga.lifecycle", 0, offset, saga_id.encode(), value)


def _processor(
    sessions: sessionmaker[Session], listener: Any, letters: list[DeadLetter]
) -> BatchProcessor:
    async def sink(letter: DeadLetter) -> None:
        letters.append(letter)

    return BatchProcessor(
        listeners=[listener],
        sessions=sessions,
        dead_letters=sink,
        agent="test.apply",
        max_delay=timedelta(milliseconds=20),
    )


async def test_one_invalid_event_of_a_batch_is_a_dead_letter_and_the_others_apply(
    sessions: sessionmaker[Session], listener: OrderStatusListener
) -> None:
    events = order_saga("s1", "completed", order_id="o1")
    body = json.loads(_batch(events, offset=7).value or b"")
    bad = {**body["events"][2], "seq": "third"}
    body["events"][2] = bad
    record = RawRecord("saga.lifecycle", 0, 7, b"s1", json.dumps(body).encode())
    letters: list[DeadLetter] = []
    result = await _processor(sessions, listener, letters).process([record])
    assert result == BatchResult(applied=len(events) - 1)
    [letter] = letters
    assert letter.error_type == "ValidationError"
    assert letter.reason.startswith(f"event 3 of {len(events)} of a batch: not a valid")
    assert (letter.source_topic, letter.offset, letter.key) == ("saga.lifecycle", 7, "s1")
    assert json.loads(letter.value()) == bad, "the dead letter holds that event alone"
    with sessions() as session:
        assert get_order(session, "o1").status == "completed"


async def test_a_batch_event_the_listener_cannot_apply_is_dead_lettered_alone(
    sessions: sessionmaker[Session],
) -> None:
    class Picky(OrderStatusListener):
        def apply(self, state: Any, event: Any) -> Any:
            if event.type == "saga_completed":
                raise sa.exc.DataError("INSERT", {}, ValueError("value too long"))
            return super().apply(state, event)

    events = order_saga("s1", "completed", order_id="o1")
    letters: list[DeadLetter] = []
    result = await _processor(sessions, Picky(), letters).process([_batch(events)])
    assert result.applied == len(events) - 1
    [letter] = letters
    assert parse_event(letter.value()) == events[-1] and "DataError" in letter.reason


async def test_a_re_sent_outbox_grouped_differently_changes_nothing(
    sessions: sessionmaker[Session], listener: OrderStatusListener
) -> None:
    """After a crash the coordinator re-sends stored events, grouped as that batch has
    them: single records, a batch overlapping the one already applied, a shorter one."""
    events = order_saga("s1", "completed", order_id="o1")
    letters: list[DeadLetter] = []
    processor = _processor(sessions, listener, letters)
    first = await processor.process([_batch(events[:3], 0), _batch(events[3:], 1)])
    assert first.applied == len(events)
    again = [
        RawRecord("saga.lifecycle", 0, 2, b"s1", events[1].to_json()),
        _batch(events[1:], 3),
        _batch(events[2:4], 4),
    ]
    second = await processor.process(again)
    assert (second.applied, letters) == (0, [])
    assert second.stale == 1 + (len(events) - 1) + 2
    with sessions() as session:
        order = get_order(session, "o1")
        assert order.status == "completed"
        assert [e.seq for e in order.timeline] == [e.seq for e in events]


async def test_a_batch_envelope_of_a_newer_version_or_another_key_is_a_dead_letter(
    sessions: sessionmaker[Session], listener: OrderStatusListener
) -> None:
    events = order_saga("s1", "completed", order_id="o1")
    newer = _batch(events, 0, schema_version=2)
    other = RawRecord("saga.lifecycle", 0, 1, b"s2", _batch(events).value)
    letters: list[DeadLetter] = []
    result = await _processor(sessions, listener, letters).process([newer, other])
    assert result == BatchResult()
    assert [(d.offset, d.error_type) for d in letters] == [
        (0, "ValidationError"),
        (1, "KeyMismatch"),
    ]
    assert "schema_version 2" in letters[0].reason and "upgrade" in letters[0].reason
