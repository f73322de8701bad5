"""Business-state queries: one order with its timeline, or orders by status."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.orm import Session

from listeners.errors import InvalidQueryError, OrderNotFoundError
from listeners.orders.models import Order, OrderEvent
from listeners.orders.status import ORDER_STATUSES, utc

__all__ = ["MAX_LIMIT", "OrderListing", "OrderView", "TimelineEntry", "get_order", "list_orders"]

#: Largest page :func:`list_orders` returns.
MAX_LIMIT = 1000


class TimelineEntry(BaseModel):
    """One applied lifecycle event of an order."""

    model_config = ConfigDict(frozen=True)

    seq: int
    type: str
    step: str | None
    service: str | None
    attempt: int | None
    error: str | None
    occurred_at: datetime


class OrderListing(BaseModel):
    """An order without its timeline."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    saga_id: str
    status: str
    current_service: str | None
    current_step: str | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    last_seq: int


class OrderView(OrderListing):
    """An order, the service it is with, and its timeline (oldest first)."""

    timeline: list[TimelineEntry]


def _listing(order: Order) -> dict[str, object]:
    return {
        "order_id": order.order_id,
        "saga_id": order.saga_id,
        "status": order.status,
        "current_service": order.current_service,
        "current_step": order.current_step,
        "last_error": order.last_error,
        "created_at": utc(order.created_at),
        "updated_at": utc(order.updated_at),
        "last_seq": order.last_seq,
    }


def get_order(session: Session, order_id: str) -> OrderView:
    """The order ``order_id`` with its timeline.

    Raises:
        OrderNotFoundError: No event of that order has been applied (yet).
    """
    order = session.get(Order, order_id)
    if order is None:
        raise OrderNotFoundError(
            f"order {order_id!r} not found in the order-status database; check the id, "
            "or that the listener worker runs and has caught up (python -m listeners worker)"
        )
    events = session.scalars(
        select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.seq)
    )
    timeline = [
        TimelineEntry(
            seq=e.seq,
            type=e.type,
            step=e.step,
            service=e.service,
            attempt=e.attempt,
            error=e.error,
            occurred_at=utc(e.occurred_at),
        )
        for e in events
        if e.saga_id == order.saga_id
    ]
    return OrderView(**_listing(order), timeline=timeline)


def list_orders(session: Session, status: str, *, limit: int = 100) -> list[OrderListing]:
    """Orders in ``status``, most recently updated first (served by an index).

    Raises:
        InvalidQueryError: ``status`` is not an order status or ``limit`` is out of range.
    """
    if status not in ORDER_STATUSES:
        raise InvalidQueryError(
            f"unknown order status {status!r}; use one of {sorted(ORDER_STATUSES)}"
        )
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQueryError(f"limit {limit} is out of range; use 1..{MAX_LIMIT}")
    orders = session.scalars(
        select(Order)
        .where(Order.status == status)
        .order_by(Order.updated_at.desc(), Order.order_id)
        .limit(limit)
    )
    return [OrderListing(**_listing(order)) for order in orders]
