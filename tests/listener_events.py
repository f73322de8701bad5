"""Lifecycle events of order sagas with known outcomes, for the listener tests.

Built with the coordinator's own event models, so the tests exercise the real contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from coordinator import events as ev

SAGA_TYPE = "order_fulfillment"
STEPS = [
    ("create_order", "order", "cancel_order"),
    ("reserve_inventory", "inventory", "release_inventory"),
    ("charge_payment", "payment", "refund_payment"),
    ("ship", "shipping", "cancel_shipment"),
    ("notify", "notification", None),
]
OUTCOMES = (
    "completed",
    "payment_declined",
    "shipping_retried",
    "cancelled",
    "compensation_failed",
    "in_flight",
)


@dataclass(frozen=True)
class Expected:
    status: str
    current_service: str | None
    current_step: str | None
    events: int


EXPECTED = {
    "completed": Expected("completed", None, None, 12),
    "payment_declined": Expected("cancelled", None, None, 13),
    "shipping_retried": Expected("completed", None, None, 14),
    "cancelled": Expected("cancelled", None, None, 11),
    "compensation_failed": Expected("compensation_failed", "inventory", "release_inventory", 11),
    "in_flight": Expected("paid", "shipping", "ship", 8),
}


class _Builder:
    def __init__(self, saga_id: str, order_id: str | None, start: datetime) -> None:
        self.saga_id, self.order_id, self.start = saga_id, order_id, start
        self.events: list[Any] = []

    def add(self, cls: type[Any], **fields: Any) -> None:
        seq = len(self.events) + 1
        self.events.append(
            cls(
                event_id=f"{self.saga_id}:{seq}",
                saga_id=self.saga_id,
                saga_type=SAGA_TYPE,
                saga_version=1,
                seq=seq,
                occurred_at=self.start + timedelta(milliseconds=10 * seq),
                business_key=self.order_id,
                **fields,
            )
        )

    def step(self, index: int, *, fail: str | None = None, retrying: bool = False) -> None:
        name, service, _ = STEPS[index]
        attempt = 1 + sum(1 for e in self.events if e.type == "step_started" and e.step == name)
        self.add(ev.StepStarted, step=name, service=service, attempt=attempt)
        if fail is None:
            self.add(ev.StepSucceeded, step=name, service=service, attempt=attempt)
        else:
            error = ev.ErrorInfo(type=fail, message=f"{name} failed", retryable=retrying)
            self.add(
                ev.StepFailed,
                step=name,
                service=service,
                attempt=attempt,
                error=error,
                retrying=retrying,
            )

    def compensate(self, upto: int, *, fail_at: int | None = None) -> None:
        for index in reversed(range(upto)):
            _, service, compensation = STEPS[index]
            if compensation is None:
                continue
            self.add(ev.CompensationStarted, step=compensation, service=service, attempt=1)
            if index == fail_at:
                error = ev.ErrorInfo(type="Timeout", message=f"{compensation} timed out")
                self.add(
                    ev.CompensationFailed,
                    step=compensation,
                    service=service,
                    attempt=1,
                    error=error,
                )
                self.add(ev.SagaCompensationFailed, step=compensation, service=service)
                return
            self.add(ev.CompensationSucceeded, step=compensation, service=service, attempt=1)


def order_saga(
    saga_id: str, outcome: str, *, order_id: str | None = None, start: datetime | None = None
) -> list[Any]:
    """All lifecycle events of one order saga ending in ``outcome`` (see ``EXPECTED``)."""
    b = _Builder(saga_id, order_id, start or datetime(2026, 1, 1, tzinfo=UTC))
    b.add(ev.SagaStarted, data={"items": 2})
    if outcome == "cancelled":
        b.step(0)
        b.step(1)
        b.add(ev.SagaCompensating, data={"reason": "cancelled"})
        b.compensate(2)
        b.add(ev.SagaCancelled)
    elif outcome == "payment_declined":
        b.step(0)
        b.step(1)
        b.step(2, fail="CardDeclined")
        b.add(ev.SagaCompensating, data={"reason": "step_failed"})
        b.compensate(2)
        b.add(ev.SagaCompensated)
    elif outcome == "compensation_failed":
        b.step(0)
        b.step(1)
        b.step(2, fail="CardDeclined")
        b.add(ev.SagaCompensating, data={"reason": "step_failed"})
        b.compensate(2, fail_at=1)
    elif outcome == "in_flight":
        b.step(0)
        b.step(1)
        b.step(2)
        b.add(ev.StepStarted, step="ship", service="shipping", attempt=1)
    else:
        for index in range(len(STEPS)):
            if outcome == "shipping_retried" and index == 3:
                b.step(3, fail="ConnectTimeout", retrying=True)
            b.step(index)
        b.add(ev.SagaCompleted)
    assert len(b.events) == EXPECTED[outcome].events, (outcome, len(b.events))
    return b.events


def mixed_sagas(count: int, *, prefix: str = "saga") -> dict[str, tuple[str, list[Any]]]:
    """``count`` sagas cycling through every outcome: saga id -> (outcome, events)."""
    sagas = {}
    for i in range(count):
        outcome = OUTCOMES[i % len(OUTCOMES)]
        saga_id = f"{prefix}-{i:04d}"
        sagas[saga_id] = (outcome, order_saga(saga_id, outcome, order_id=f"order-{i:04d}"))
    return sagas
