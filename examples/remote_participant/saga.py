"""Checkout: stock and receipts in Python, the payment in Node.js (``participant.js``).

The payment service is *remote*: the coordinator runs no executor for it; the Node.js
process consumes ``{prefix}.step.payment-node`` and replies to the inbox.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from coordinator import BusinessFailure, Saga, Service, Step, StepContext, remote


class Checkout(BaseModel):
    order_id: str
    amount_cents: int
    lose_first_reply: bool = False  # the Node.js participant drops its first answer
    refuse_receipt: bool = False  # the last step refuses: everything before is undone


class Reservation(BaseModel):
    reservation_id: str


class Charge(BaseModel):
    charge_id: str
    amount_cents: int


class Receipt(BaseModel):
    receipt_id: str


STOCK = Service("stock")
PAYMENTS = Service("payment-node", remote=True)  # participant.js
RECEIPTS = Service("receipt")


async def reserve(ctx: StepContext[Checkout]) -> Reservation:
    return Reservation(reservation_id=f"r-{ctx.input.order_id}")


async def release(ctx: StepContext[Checkout]) -> None:
    return None


async def issue_receipt(ctx: StepContext[Checkout]) -> Receipt:
    if ctx.input.refuse_receipt:
        raise BusinessFailure(f"no receipt for order {ctx.input.order_id}")
    return Receipt(receipt_id=f"rc-{ctx.output('charge', Charge).charge_id}")


CHECKOUT = Saga("checkout", input=Checkout, steps=[
    Step("reserve", service=STOCK, action=reserve, compensation=release),
    Step("charge", service=PAYMENTS, action=remote(output=Charge), compensation=remote(),
         timeout=timedelta(seconds=3)),
    Step("receipt", service=RECEIPTS, action=issue_receipt),
])  # fmt: skip
