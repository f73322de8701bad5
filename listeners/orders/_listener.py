"""The order-status listener, declared on the listener API like any other listener."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

from listeners._declarative import Listener
from listeners._events import Event
from listeners._settings import DEFAULT_ORDER_STATUS_BY_STEP, ListenerSettings
from listeners.orders._models import Order
from listeners.orders._status import ORDER_STATUSES, StatusRules

__all__ = ["OrderStatusListener", "order_listener"]


class OrderStatusListener(Listener[Order]):
    """Keeps ``orders`` (status, current service, last error) and ``order_events``.

    The standard part tracks step, service and error; the handlers below only turn saga
    milestones into the order's vocabulary (pending, paid, shipped, cancelled, ...).

    Args:
        saga_types: Saga types whose events it applies.
        status_by_step: Status an order reaches when the named step succeeds.
    """

    def __init__(
        self,
        *,
        saga_types: Collection[str] = ("order_fulfillment",),
        status_by_step: Mapping[str, str] | None = None,
    ) -> None:
        rules = StatusRules(
            DEFAULT_ORDER_STATUS_BY_STEP if status_by_step is None else status_by_step
        )
        super().__init__(
            "orders",
            model=Order,
            saga_types=saga_types,
            statuses=ORDER_STATUSES,
            timeline="order_events",
            migrations=Path(__file__).resolve().parent / "migrations",
        )
        self.rules = rules

        @self.on_start
        def pending(order: Order, event: Event) -> None:
            order.status = "pending"

        @self.on_step_succeeded()
        def reached(order: Order, event: Event) -> None:
            order.status = rules.status_by_step.get(event.step or "", order.status)

        @self.on_compensating
        def cancelling(order: Order, event: Event) -> None:
            order.status = "cancelling"

        @self.on_compensated
        @self.on_cancel
        def cancelled(order: Order, event: Event) -> None:
            order.status = "cancelled"


def order_listener(settings: ListenerSettings) -> OrderStatusListener:
    """The order-status listener configured from ``LISTENER_ORDER_*`` settings."""
    return OrderStatusListener(
        saga_types=settings.order_saga_types, status_by_step=settings.order_status_by_step
    )
