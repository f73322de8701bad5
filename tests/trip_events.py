"""Lifecycle events of trip-booking sagas (the example non-order listener's saga)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from coordinator import events as ev
from listeners import GenericEvent

SAGA_TYPE = "trip_booking"
STEPS = [("book_flight", "airline"), ("book_hotel", "hotels"), ("book_car", "cars")]


def trip_saga(
    saga_id: str,
    trip_id: str,
    outcome: str,
    *,
    start: datetime | None = None,
    unknown_type: bool = False,
) -> list[Any]:
    """Events of one trip saga; ``outcome``: completed, hotel_failed, in_flight.

    With ``unknown_type`` an event of a type this coordinator version does not model
    (``trip_note``) is inserted after the start, as a newer coordinator might send.
    """
    start = start or datetime(2026, 3, 1, tzinfo=UTC)
    events: list[Any] = []

    def add(cls: type[Any], **fields: Any) -> None:
        seq = len(events) + 1
        events.append(
            cls(
                event_id=f"{saga_id}:{seq}",
                saga_id=saga_id,
                saga_type=SAGA_TYPE,
                saga_version=1,
                seq=seq,
                occurred_at=start + timedelta(seconds=seq),
                business_key=trip_id,
                **fields,
            )
        )

    add(ev.SagaStarted, data={"destination": "Lisbon"})
    if unknown_type:
        add(GenericEvent, type="trip_note", data={"note": "window seat"})
    for index, (step, service) in enumerate(STEPS):
        add(ev.StepStarted, step=step, service=service, attempt=1)
        if outcome == "in_flight" and index == 1:
            return events
        if outcome == "hotel_failed" and index == 1:
            error = ev.ErrorInfo(type="NoRooms", message="hotel full", retryable=False)
            add(ev.StepFailed, step=step, service=service, attempt=1, error=error)
            add(ev.SagaCompensating, data={"reason": "step_failed"})
            # Compensation events name the step they undo, as the coordinator sends them.
            add(ev.CompensationStarted, step="book_flight", service="airline", attempt=1)
            add(ev.CompensationSucceeded, step="book_flight", service="airline", attempt=1)
            add(ev.SagaCompensated)
            return events
        add(
            ev.StepSucceeded, step=step, service=service, attempt=1, data={"reference": f"R{index}"}
        )
    add(ev.SagaCompleted)
    return events
