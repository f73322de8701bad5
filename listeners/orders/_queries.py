"""Order queries: the generic entity queries, shaped as the order schema always was."""

from __future__ import annotations

from datetime import datetime
from functools import cache

from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from listeners._errors import EntityNotFoundError, OrderNotFoundError
from listeners._queries import MAX_LIMIT, SagaView, TimelineEntry, get_entity, list_entities
from listeners.orders._listener import OrderStatusListener

__all__ = ["MAX_LIMIT", "OrderListing", "OrderView", "TimelineEntry", "get_order", "list_orders"]


@cache
def _orders() -> OrderStatusListener:
    # Queries read only the model and its tables, which every configuration shares.
    return OrderStatusListener()


class OrderListing(BaseModel):
    """An order (its most recently started saga) without its timeline."""

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
    """An order, the service it is with, its saga's timeline, and earlier sagas' ids."""

    timeline: list[TimelineEntry]
    earlier_sagas: list[str] = []


def _listing(saga: SagaView) -> dict[str, object]:
    return {
        "order_id": saga.business_key,
        "saga_id": saga.saga_id,
        "status": saga.status,
        "current_service": saga.current_service,
        "current_step": saga.current_step,
        "last_error": saga.last_error,
        "created_at": saga.started_at,
        "updated_at": saga.updated_at,
        "last_seq": saga.last_seq,
    }


def get_order(session: Session, order_id: str) -> OrderView:
    """The order ``order_id``: its newest saga, with that saga's timeline.

    Raises:
        OrderNotFoundError: No event of that order has been applied (yet).
    """
    try:
        entity = get_entity(session, _orders(), order_id)
    except EntityNotFoundError as exc:
        raise OrderNotFoundError(
            f"order {order_id!r} not found in the order-status database; check the id, "
            "or that the listener worker runs and has caught up (python -m listeners worker)"
        ) from exc
    earlier = [saga.saga_id for saga in entity.history]
    return OrderView(**_listing(entity), timeline=entity.timeline, earlier_sagas=earlier)


def list_orders(session: Session, status: str, *, limit: int = 100) -> list[OrderListing]:
    """Orders in ``status``, most recently updated first.

    Raises:
        InvalidQueryError: ``status`` is not an order status or ``limit`` is out of range.
    """
    found = list_entities(session, _orders(), {"status": status}, limit=limit)
    return [OrderListing(**_listing(saga)) for saga in found]
