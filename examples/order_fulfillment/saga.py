"""The order-fulfillment saga: five participants, each step with its compensation beside it.

Read it like eventuate's ``CreateOrderSaga``: the steps in order, the participant each
belongs to (declared once in :mod:`~examples.order_fulfillment.participants`, with its
endpoints and models), the compensation of each, and the retry policy of the one unusual
step. Every compensation undoes its step by the step's idempotency key (``POST .../undo``,
the participant contract), so it works even when the step's reply never arrived.
"""

from __future__ import annotations

from datetime import timedelta

from coordinator import NO_RETRY, RetryPolicy, Saga, Step, StepContext
from examples.order_fulfillment.models import (
    ChargeRequest,
    CreateShipmentRequest,
    NotificationRequest,
    ReserveInventoryRequest,
)
from examples.order_fulfillment.models import CreateOrderRequest as Order
from examples.order_fulfillment.participants import (
    INVENTORY,
    NOTIFICATIONS,
    ORDERS,
    PAYMENTS,
    SHIPPING,
)


def place(c: StepContext[Order]) -> Order:
    """The order service's request: the order as the saga received it."""
    return c.input


def reserve(c: StepContext[Order]) -> ReserveInventoryRequest:
    """The inventory service's request: the order's items."""
    return ReserveInventoryRequest(order_id=c.input.order_id, items=c.input.items)


def charge(c: StepContext[Order]) -> ChargeRequest:
    """The payment service's request: the order's amount and card."""
    o = c.input
    return ChargeRequest(order_id=o.order_id, amount_cents=o.amount_cents, card_token=o.card_token)


def ship(c: StepContext[Order]) -> CreateShipmentRequest:
    """The shipping service's request: the order's items and zip code."""
    o = c.input
    return CreateShipmentRequest(order_id=o.order_id, shipping_zip=o.shipping_zip, items=o.items)


def notify(c: StepContext[Order]) -> NotificationRequest:
    """The notification service's request: tell the customer the order shipped."""
    return NotificationRequest(order_id=c.input.order_id, message="your order has shipped")


# Shipping has outages: every attempt is a durable, visible retry (no hidden in-process ones).
SHIPPING_RETRY = RetryPolicy(maximum_attempts=4, initial_interval=timedelta(milliseconds=200))

ORDER_SAGA = Saga("order_fulfillment", version=1, input=Order, steps=[
    Step("create_order", service=ORDERS,
         action=ORDERS.create.call(place), compensation=ORDERS.create.undo()),
    Step("reserve_inventory", service=INVENTORY,
         action=INVENTORY.reserve.call(reserve), compensation=INVENTORY.reserve.undo()),
    Step("charge_payment", service=PAYMENTS,
         action=PAYMENTS.charge.call(charge), compensation=PAYMENTS.charge.undo()),
    Step("ship", service=SHIPPING, retry=SHIPPING_RETRY,
         action=SHIPPING.ship.call(ship, transport_retry=NO_RETRY),
         compensation=SHIPPING.ship.undo()),
    Step("notify", service=NOTIFICATIONS,
         action=NOTIFICATIONS.notify.call(notify)),
])  # fmt: skip
