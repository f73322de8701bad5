"""The example order saga with a short payment timeout, so a slow-participant scenario
(payments slower than the step timeout on every attempt) fits in seconds."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from coordinator import Saga
from examples.order_fulfillment.saga import ORDER_SAGA

#: every attempt of ``charge_payment`` (and its refund) times out after this long
PAYMENT_TIMEOUT = timedelta(seconds=2)
#: the payment service's latency in the scenario: well past all three attempts together
#: (2 s each, backoff 0.2 s and 0.4 s): the charge lands while the saga unwinds
PAYMENT_LATENCY_MS = 12000

ORDER_SAGA_SHORT_PAYMENT_TIMEOUT = Saga(
    ORDER_SAGA.name,
    version=ORDER_SAGA.version,
    input=ORDER_SAGA.input,
    steps=[
        replace(step, timeout=PAYMENT_TIMEOUT) if step.name == "charge_payment" else step
        for step in ORDER_SAGA.steps
    ],
)
