"""Sagas with short timeouts over the example services, for the outcome tests."""

from __future__ import annotations

from datetime import timedelta

from coordinator import NO_RETRY, RetryPolicy, Saga, Step
from examples.order_fulfillment.models import CreateOrderRequest as Order
from examples.order_fulfillment.participants import ORDERS, SHIPPING
from examples.order_fulfillment.saga import place, ship

UNDO_RETRY = RetryPolicy(
    maximum_attempts=10,
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=2),
)


def slow_ship(name: str, *, attempts: int, backoff: timedelta) -> Saga[Order]:
    """create_order, then a ship step whose 1 s timeout a slow carrier exceeds."""
    return Saga(name, input=Order, steps=[
        Step("create_order", service=ORDERS,
             action=ORDERS.create.call(place), compensation=ORDERS.create.undo()),
        Step("ship", service=SHIPPING, timeout=timedelta(seconds=1),
             retry=RetryPolicy(maximum_attempts=attempts, initial_interval=backoff,
                               maximum_interval=backoff, jitter=0.0),
             compensation_retry=UNDO_RETRY,
             action=SHIPPING.ship.call(ship, transport_retry=NO_RETRY),
             compensation=SHIPPING.ship.undo()),
    ])  # fmt: skip


#: retries run out while the first attempt is still being applied
EXHAUSTED = slow_ship("slow_ship", attempts=2, backoff=timedelta(milliseconds=200))
#: a long backoff after the first timeout, for a cancel to land in
BACKOFF = slow_ship("slow_ship_backoff", attempts=3, backoff=timedelta(seconds=20))
