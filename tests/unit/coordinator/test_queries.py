"""What `status` shows: the saga's record as a typed view and as text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from coordinator import SagaView
from coordinator._queries import format_view, saga_view
from coordinator._state import SagaState, StepState

T0 = datetime(2026, 11, 21, 20, 0, tzinfo=UTC)


def state(**fields: object) -> SagaState:
    values: dict[str, object] = {
        "saga_id": "order:42",
        "saga_type": "order",
        "saga_version": 1,
        "business_key": "42",
        "input": {},
        "steps": [
            StepState(name="charge", service="payment", status="succeeded", attempts=1),
            StepState(name="ship", service="shipping", status="maybe_applied", attempts=3),
        ],
        "started_at": T0,
        "updated_at": T0,
    }
    values.update(fields)
    return SagaState.model_validate(values)


def test_the_json_served_round_trips_into_the_typed_view() -> None:
    view = SagaView.model_validate(saga_view(state(status="running")))
    assert view.status == "running" and not view.resting
    assert [(s.name, s.status) for s in view.steps] == [
        ("charge", "succeeded"),
        ("ship", "maybe_applied"),
    ]


def test_a_parked_saga_names_the_step_an_operator_resolves() -> None:
    view = SagaView.of(state(status="parked", current=1))
    assert view.resting and not view.terminal
    assert (view.current_step, view.current_service) == ("ship", "shipping")
    assert "status: parked  — with shipping (ship" in format_view(view)


def test_a_compact_record_says_only_the_outcome_is_kept() -> None:
    finished = state(status="completed", finished_at=T0)
    marker = finished.marker(now=T0 + timedelta(days=7), expires_at=T0 + timedelta(days=30))
    text = format_view(SagaView.of(marker))
    assert "status: completed" in text
    assert "only its outcome is kept, to refuse a second start; deleted at 2026-12-21" in text
