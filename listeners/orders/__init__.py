"""The order-status listener: what each order is and which service it is with."""

from __future__ import annotations

from listeners.orders._listener import OrderStatusListener, order_listener
from listeners.orders._models import Order, OrderEvent, metadata
from listeners.orders._queries import OrderListing, OrderView, TimelineEntry, get_order, list_orders
from listeners.orders._status import ORDER_STATUSES, StatusRules

__all__ = [
    "ORDER_STATUSES",
    "Order",
    "OrderEvent",
    "OrderListing",
    "OrderStatusListener",
    "OrderView",
    "StatusRules",
    "TimelineEntry",
    "get_order",
    "list_orders",
    "metadata",
    "order_listener",
]
