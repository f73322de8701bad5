"""The lifecycle record formats: one event, or a batch of one saga's events."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from coordinator import CoordinatorSettings
from coordinator._lifecycle import lifecycle_records
from coordinator.events import (
    EventBatch,
    LifecycleEvent,
    LifecycleRecordError,
    SagaCompleted,
    SagaStarted,
    StepSucceeded,
    parse_event,
    parse_events,
    unpack_record,
)

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _events(saga_id: str = "s1", n: int = 5, data: str = "") -> list[LifecycleEvent]:
    common = {"saga_id": saga_id, "saga_type": "t", "saga_version": 1, "occurred_at": AT}
    out: list[LifecycleEvent] = [SagaStarted(event_id=f"{saga_id}:1", seq=1, **common)]
    for seq in range(2, n):
        out.append(
            StepSucceeded(
                event_id=f"{saga_id}:{seq}", seq=seq, step=f"s{seq}", data={"x": data}, **common
            )
        )
    out.append(SagaCompleted(event_id=f"{saga_id}:{n}", seq=n, **common))
    return out


def test_both_forms_round_trip() -> None:
    events = _events()
    assert parse_events(events[0].to_json()) == [events[0]]
    batch = EventBatch(saga_id="s1", events=events).to_json()
    assert parse_events(batch) == events
    assert unpack_record(batch) == ("s1", [json.loads(e.to_json()) for e in events])
    assert unpack_record(events[0].to_json()) == (None, [json.loads(events[0].to_json())])


def test_the_coordinator_packs_a_saga_s_events_into_one_record_in_order() -> None:
    events = _events()
    [record] = lifecycle_records("t.lifecycle", "s1", [e.to_json() for e in events])
    assert (record.topic, record.key) == ("t.lifecycle", b"s1")
    assert parse_events(record.value or b"") == events
    assert EventBatch.model_validate_json(record.value or b"").events == events


def test_single_form_and_a_lone_event_are_one_record_per_event() -> None:
    events = _events()
    single = lifecycle_records("t", "s1", [e.to_json() for e in events], form="single")
    assert [parse_event(r.value or b"") for r in single] == events
    [alone] = lifecycle_records("t", "s1", [events[0].to_json()])
    assert alone.value == events[0].to_json(), "a group of one travels in the single form"


def test_records_stay_within_the_limit_and_a_large_event_travels_alone() -> None:
    events = _events(n=12, data="x" * 300)
    big = StepSucceeded(**{**events[5].model_dump(), "data": {"x": "y" * 5000}})
    events[5] = big
    payloads = [e.to_json() for e in events]
    limit = 2000
    records = lifecycle_records("t", "s1", payloads, limit=limit)
    assert len(records) > 2
    assert all(len(r.value or b"") <= limit for r in records if r.value != big.to_json())
    assert big.to_json() in [r.value for r in records], "too large to share: alone, single"
    assert [e for r in records for e in parse_events(r.value or b"")] == events


def test_the_saga_id_is_json_escaped_in_the_envelope() -> None:
    events = _events(saga_id='order "7"\\ünï')
    [record] = lifecycle_records("t", events[0].saga_id, [e.to_json() for e in events])
    assert parse_events(record.value or b"") == events


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"{broken", "not JSON"),
        (b"[1, 2]", "a JSON list, not an object"),
        (b'{"schema_version": 2, "saga_id": "s1", "events": [{}]}', "schema_version 2"),
        (b'{"schema_version": 1, "saga_id": "s1", "events": []}', "at least one event"),
        (b'{"schema_version": 1, "saga_id": "s1", "events": {}}', "events of type dict"),
        (b'{"schema_version": 1, "saga_id": "s1", "events": [], "x": 1}', "unknown fields"),
        (b'{"type": "saga_started"}', "not a valid lifecycle event"),
    ],
)
def test_anything_else_is_refused_naming_the_problem(value: bytes, problem: str) -> None:
    with pytest.raises(LifecycleRecordError) as raised:
        parse_events(value)
    assert problem in str(raised.value)
    assert isinstance(raised.value, ValueError)


def _batch_of(items: list[dict[str, object]], saga_id: str = "s1") -> bytes:
    return json.dumps({"schema_version": 1, "saga_id": saga_id, "events": items}).encode()


def test_a_batch_with_an_invalid_event_names_its_position() -> None:
    items = [json.loads(e.to_json()) for e in _events()]
    items[3]["seq"] = 0
    with pytest.raises(LifecycleRecordError, match="event 4 of 5 in the batch record of saga"):
        parse_events(_batch_of(items))


def test_a_batch_out_of_seq_order_or_with_another_saga_s_event_is_refused() -> None:
    items = [json.loads(e.to_json()) for e in _events()]
    with pytest.raises(LifecycleRecordError, match="seq 2 after seq 3"):
        parse_events(_batch_of([items[0], items[2], items[1]]))
    with pytest.raises(LifecycleRecordError, match="seq 1 after seq 1"):
        parse_events(_batch_of([items[0], items[0]]))
    with pytest.raises(LifecycleRecordError, match="belongs to saga 's1'"):
        parse_events(_batch_of(items, saga_id="s2"))


def test_the_default_format_is_batch_and_single_can_be_chosen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert CoordinatorSettings().lifecycle_format == "batch"
    monkeypatch.setenv("SAGA_LIFECYCLE_FORMAT", "single")
    assert CoordinatorSettings().lifecycle_format == "single"
    monkeypatch.setenv("SAGA_LIFECYCLE_FORMAT", "batches")
    with pytest.raises(ValueError, match="batch"):
        CoordinatorSettings()


def test_an_event_whose_data_mentions_events_is_still_one_event() -> None:
    [event] = _events(n=3)[1:2]
    talkative = StepSucceeded(**{**event.model_dump(), "data": {"events": [1, 2]}})
    assert parse_events(talkative.to_json()) == [talkative]
    assert parse_events(talkative.to_json().decode()) == [talkative]
    batch = EventBatch(saga_id="s1", events=[talkative]).to_json().decode()
    assert parse_events(batch) == [talkative]


def test_the_client_sees_an_event_type_in_either_form() -> None:
    from coordinator._client import _event_types

    events = _events()
    batch = EventBatch(saga_id="s1", events=events).to_json()
    assert _event_types(batch) == [e.type for e in events]
    assert _event_types(events[0].to_json()) == ["saga_started"]
    assert _event_types(b"{broken") == [] and _event_types(b"[]") == []
