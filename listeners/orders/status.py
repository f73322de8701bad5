"""How lifecycle events move an order between statuses: a pure function, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import MappingProxyType

from coordinator.events import LifecycleEvent
from listeners.errors import ListenerConfigError

__all__ = ["ORDER_STATUSES", "OrderState", "StatusRules", "next_state"]

#: Every status an order can have.
ORDER_STATUSES = frozenset(
    {
        "pending",
        "inventory_reserved",
        "paid",
        "shipped",
        "completed",
        "cancelling",
        "cancelled",
        "compensation_failed",
    }
)

# Saga-level events fix the status whatever the step mapping says.
_SAGA_STATUS = MappingProxyType(
    {
        "saga_started": "pending",
        "saga_compensating": "cancelling",
        "saga_compensated": "cancelled",
        "saga_cancelled": "cancelled",
        "saga_compensation_failed": "compensation_failed",
        "saga_completed": "completed",
    }
)
# After these the order is with no service any more.
_SETTLED = frozenset({"saga_completed", "saga_compensated", "saga_cancelled"})
# Events that put the order in the hands of the event's service.
_AT_SERVICE = frozenset(
    {
        "step_started",
        "step_succeeded",
        "step_failed",
        "compensation_started",
        "compensation_succeeded",
        "compensation_failed",
    }
)


@dataclass(frozen=True)
class StatusRules:
    """Which status an order reaches when a step of its saga succeeds.

    Attributes:
        status_by_step: Step name to status, e.g. ``{"charge_payment": "paid"}``. Steps
            not named (and every compensation) leave the status as it is.
    """

    status_by_step: Mapping[str, str]

    def __post_init__(self) -> None:
        unknown = {s: v for s, v in self.status_by_step.items() if v not in ORDER_STATUSES}
        if unknown:
            raise ListenerConfigError(
                f"order status mapping {unknown} names unknown statuses; use one of "
                f"{sorted(ORDER_STATUSES)} (LISTENER_ORDER_STATUS_BY_STEP)"
            )
        object.__setattr__(self, "status_by_step", MappingProxyType(dict(self.status_by_step)))


@dataclass(frozen=True)
class OrderState:
    """An order as the ``orders`` table stores it."""

    order_id: str
    saga_id: str
    saga_type: str
    status: str
    current_service: str | None
    current_step: str | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    last_seq: int


def utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime (naive values are taken to be UTC)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def describe_error(event: LifecycleEvent) -> str | None:
    """``"Type: message"`` of the event's error, or ``None``."""
    if event.error is None:
        return None
    return f"{event.error.type}: {event.error.message}"


def next_state(state: OrderState | None, event: LifecycleEvent, rules: StatusRules) -> OrderState:
    """The order after ``event``. The caller has checked that ``event.seq`` is newer."""
    at = utc(event.occurred_at)
    if state is None:
        state = OrderState(
            order_id=event.business_key or event.saga_id,
            saga_id=event.saga_id,
            saga_type=event.saga_type,
            status="pending",
            current_service=None,
            current_step=None,
            last_error=None,
            created_at=at,
            updated_at=at,
            last_seq=0,
        )
    status = state.status
    service, step, error = state.current_service, state.current_step, state.last_error
    if event.type in _AT_SERVICE:
        service, step = event.service, event.step
    if event.type == "step_succeeded" and event.step is not None:
        status = rules.status_by_step.get(event.step, status)
    if event.type in {"step_succeeded", "saga_completed"}:
        error = None  # a retried failure was overcome; it stays in the timeline
    if event.type in {"step_failed", "compensation_failed", "saga_compensation_failed"}:
        error = describe_error(event) or error
    if event.type in _SAGA_STATUS:
        status = _SAGA_STATUS[event.type]
    if event.type in _SETTLED:
        service, step = None, None
    return replace(
        state,
        status=status,
        current_service=service,
        current_step=step,
        last_error=error,
        updated_at=max(state.updated_at, at),
        last_seq=event.seq,
    )
