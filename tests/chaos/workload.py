"""The sagas a chaos scenario submits: each with an injected failure that explains its outcome.

A saga's *kind* fixes its input (card, SKU, zip) and so, with the example services'
default knobs, what must happen to it: the coordinator status it ends in, the steps it
compensates (in order), and which effects the participants must hold at the end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from coordinator import SagaClient
from examples.order_fulfillment.models import CreateOrderRequest, LineItem

SAGA_TYPE = "order_fulfillment"
FULL_UNWIND = ("charge_payment", "reserve_inventory", "create_order")


@dataclass(frozen=True)
class Kind:
    """An injected failure (or none) and the outcome it explains.

    Attributes:
        name: short label used in reports.
        card, sku, zip_code: the input that triggers the failure in the example services.
        status: the coordinator status the saga must end in.
        compensations: the steps whose compensation must succeed, in this order.
    """

    name: str
    status: str
    compensations: tuple[str, ...] = ()
    #: a step whose last outcome was uncertain (5xx, timeout): it may have applied, so it
    #: may be compensated first (issue #9); ``compensations`` with or without it is right
    uncertain: str | None = None
    #: another status the same injected failure explains (see ``SLOW_PAYMENT``)
    or_status: str | None = None
    #: a step whose retry budget the injected failure nearly uses up: if a fault (broker
    #: or worker down) also costs it attempts, which then expire unrun or time out, the
    #: budget runs out and a full unwind (this step first, as uncertain) is right too
    #: (see ``FLAKY_SHIPPING``)
    outage_step: str | None = None
    card: str = "tok_ok"
    sku: str = "SKU-1"
    zip_code: str = "10001"

    def compensation_orders(self) -> list[tuple[str, ...]]:
        """Every right order of compensations (an uncertain step may come first)."""
        if self.uncertain is None:
            return [self.compensations]
        return [self.compensations, (self.uncertain, *self.compensations)]

    def after_outage(self) -> Kind:
        """The outcome when a fault cost ``outage_step`` attempts (see ``outage_step``)."""
        assert self.outage_step is not None
        return Kind(
            self.name, "compensated", FULL_UNWIND, uncertain=self.outage_step, or_status=self.status
        )


OK = Kind("ok", "completed")
DECLINED = Kind(
    "declined", "compensated", ("reserve_inventory", "create_order"), card="tok_declined"
)
OUT_OF_STOCK = Kind("out_of_stock", "compensated", ("create_order",), sku="SKU-OOS")
SHIPPING_OUTAGE = Kind(
    "shipping_outage", "compensated", FULL_UNWIND, uncertain="ship", zip_code="99999"
)
#: shipping answers 503 twice per key, then 201; ship has 4 attempts. An attempt a broker
#: or worker fault makes expire unrun or time out leaves 3, two lost leave 2: compensated
FLAKY_SHIPPING = Kind("flaky_shipping", "completed", zip_code="55555", outage_step="ship")
#: the payment service is slower than the step timeout on every attempt: the charge is
#: applied after the last attempt timed out, so the step is *maybe applied* and must be
#: compensated first (issue #9). Should scheduling delay the last attempt past the moment
#: the charge lands, that attempt gets the stored reply and the saga completes: also right
SLOW_PAYMENT = Kind("slow_payment", "compensated", FULL_UNWIND, or_status="completed")

#: one saga in ten of each failure, the rest succeed
MIX: tuple[Kind, ...] = (
    OK,
    DECLINED,
    OK,
    OUT_OF_STOCK,
    OK,
    SHIPPING_OUTAGE,
    OK,
    FLAKY_SHIPPING,
    OK,
    OK,
)


@dataclass(frozen=True)
class Planned:
    """One saga to submit: its id, order id (the business key) and kind."""

    saga_id: str
    order_id: str
    kind: Kind

    def order(self, *, customer_id: str = "c1") -> CreateOrderRequest:
        return CreateOrderRequest(
            order_id=self.order_id,
            customer_id=customer_id,
            items=[LineItem(sku=self.kind.sku, quantity=1)],
            amount_cents=1999,
            card_token=self.kind.card,
            shipping_zip=self.kind.zip_code,
        )


def plan(
    prefix: str, count: int, *, kinds: tuple[Kind, ...] = MIX, start: int = 0
) -> list[Planned]:
    """``count`` sagas cycling through ``kinds``; ids are unique per prefix."""
    return [
        Planned(f"{prefix}-s{i}", f"{prefix}-o{i}", kinds[i % len(kinds)])
        for i in range(start, start + count)
    ]


@dataclass
class Submitted:
    """What was submitted and when (``time.monotonic()``)."""

    sagas: dict[str, Planned] = field(default_factory=dict)
    at: dict[str, float] = field(default_factory=dict)

    def before(self, moment: float) -> list[str]:
        return [saga_id for saga_id, at in self.at.items() if at <= moment]


async def submit(
    client: SagaClient,
    sagas: Iterable[Planned],
    record: Submitted,
    *,
    interval: float = 0.0,
    paused: asyncio.Event | None = None,
) -> None:
    """Start each saga (explicit id and business key), ``interval`` seconds apart.

    While ``paused`` is set (a fault is being injected, e.g. the broker is down),
    submission waits: the scenario measures the coordinator, not the client's retries.
    """
    for planned in sagas:
        while paused is not None and paused.is_set():
            await asyncio.sleep(0.05)
        await client.start(
            SAGA_TYPE,
            planned.order(),
            saga_id=planned.saga_id,
            business_key=planned.order_id,
            wait=False,  # pipelined; ``flush`` below (a fault must not stall the submitter)
        )
        record.sagas[planned.saga_id] = planned
        record.at[planned.saga_id] = time.monotonic()
        if interval:
            await asyncio.sleep(interval)
    await client.flush()
