"""The order-fulfillment saga: five services, each step with its compensation beside it.

Every compensation undoes its step by the step's idempotency key (``POST .../undo``, the
participant contract), so it works even when the step's reply never arrived.
"""

from __future__ import annotations

from datetime import timedelta

from coordinator import NO_RETRY, RetryPolicy, Saga, Service, Step, StepContext, http
from examples.order_fulfillment.models import (
    ChargeReply,
    ChargeRequest,
    CreateShipmentRequest,
    NotificationReply,
    NotificationRequest,
    OrderReply,
    ReservationReply,
    ReserveInventoryRequest,
    ShipmentReply,
)
from examples.order_fulfillment.models import (
    CreateOrderRequest as Order,
)


def place(c: StepContext[Order]) -> Order:
    return c.input


def reserve(c: StepContext[Order]) -> ReserveInventoryRequest:
    return ReserveInventoryRequest(order_id=c.input.order_id, items=c.input.items)


def charge(c: StepContext[Order]) -> ChargeRequest:
    o = c.input
    return ChargeRequest(order_id=o.order_id, amount_cents=o.amount_cents, card_token=o.card_token)


def ship(c: StepContext[Order]) -> CreateShipmentRequest:
    o = c.input
    return CreateShipmentRequest(order_id=o.order_id, shipping_zip=o.shipping_zip, items=o.items)


def notify(c: StepContext[Order]) -> NotificationRequest:
    return NotificationRequest(order_id=c.input.order_id, message="your order has shipped")


ORDERS = Service("order")
INVENTORY = Service("inventory")
PAYMENTS = Service("payment")
SHIPPING = Service("shipping")
NOTIFICATIONS = Service("notification")

# Shipping has outages: every attempt is a durable, visible retry (no hidden in-process ones).
SHIPPING_RETRY = RetryPolicy(maximum_attempts=4, initial_interval=timedelta(milliseconds=200))

ORDER_SAGA = Saga("order_fulfillment", version=1, input=Order, steps=[
    Step("create_order", service=ORDERS,
         action=http("POST", "", body=place, output=OrderReply),
         compensation=http("POST", "/undo")),
    Step("reserve_inventory", service=INVENTORY,
         action=http("POST", "/reservations", body=reserve, output=ReservationReply),
         compensation=http("POST", "/reservations/undo")),
    Step("charge_payment", service=PAYMENTS,
         action=http("POST", "/charges", body=charge, output=ChargeReply),
         compensation=http("POST", "/charges/undo")),
    Step("ship", service=SHIPPING, retry=SHIPPING_RETRY,
         action=http("POST", "/shipments", body=ship, output=ShipmentReply,
                     transport_retry=NO_RETRY),
         compensation=http("POST", "/shipments/undo")),
    Step("notify", service=NOTIFICATIONS,
         action=http("POST", "", body=notify, output=NotificationReply)),
])  # fmt: skip


def service_urls(base_url: str) -> dict[str, str]:
    """Where each participant lives when the example services run at ``base_url``."""
    base = base_url.rstrip("/")
    return {
        "order": f"{base}/orders",
        "inventory": f"{base}/inventory",
        "payment": f"{base}/payments",
        "shipping": f"{base}/shipping",
        "notification": f"{base}/notifications",
    }
