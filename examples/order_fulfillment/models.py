"""Wire models of the order-fulfillment services: every request and reply body.

The saga imports these to build step inputs and parse step outputs, so they are
the contract between the saga and the services. Routes are listed in
:mod:`examples.order_fulfillment.services`.

Request models ignore unknown fields (a saga may send a richer context than a
step needs); :class:`Knobs` forbids them, because a misspelled knob silently
doing nothing would make a failure test pass for the wrong reason.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt

ServiceName = Literal["orders", "inventory", "payments", "shipping", "notifications"]
SERVICE_NAMES: tuple[ServiceName, ...] = (
    "orders",
    "inventory",
    "payments",
    "shipping",
    "notifications",
)

IDEMPOTENCY_HEADER = "Idempotency-Key"
#: on a compensation: the Idempotency-Key of the action it undoes
COMPENSATES_HEADER = "Saga-Compensates"
REPLAYED_HEADER = "Idempotent-Replayed"


class LineItem(BaseModel):
    """One line of an order: a SKU and how many units."""

    sku: str = Field(min_length=1)
    quantity: PositiveInt


# --- requests ---------------------------------------------------------------


class CreateOrderRequest(BaseModel):
    """Body of ``POST /orders``."""

    order_id: str = Field(min_length=1)
    customer_id: str = Field(min_length=1)
    items: list[LineItem] = Field(min_length=1)
    amount_cents: PositiveInt
    card_token: str = Field(min_length=1)
    shipping_zip: str = Field(min_length=1)


class ReserveInventoryRequest(BaseModel):
    """Body of ``POST /inventory/reservations``."""

    order_id: str = Field(min_length=1)
    items: list[LineItem] = Field(min_length=1)


class ChargeRequest(BaseModel):
    """Body of ``POST /payments/charges``."""

    order_id: str = Field(min_length=1)
    amount_cents: PositiveInt
    card_token: str = Field(min_length=1)


class CreateShipmentRequest(BaseModel):
    """Body of ``POST /shipping/shipments``."""

    order_id: str = Field(min_length=1)
    shipping_zip: str = Field(min_length=1)
    items: list[LineItem] = Field(min_length=1)


class NotificationRequest(BaseModel):
    """Body of ``POST /notifications``."""

    order_id: str = Field(min_length=1)
    message: str = Field(min_length=1)


class CompensationRequest(BaseModel):
    """Optional body of every compensation (cancel, release, refund); may be empty."""

    reason: str | None = None


# --- replies ----------------------------------------------------------------


class UndoReply(BaseModel):
    """An undo that found nothing to undo: a tombstone, or a definitely failed action."""

    action_key: str
    outcome: Literal["tombstone", "nothing_applied"]


OrderStatus = Literal["created", "cancelled"]
ReservationStatus = Literal["reserved", "released"]
ChargeStatus = Literal["charged", "refunded"]
ShipmentStatus = Literal["created", "cancelled"]


class OrderReply(BaseModel):
    """Reply of ``POST /orders`` (201) and of its cancel (200)."""

    order_id: str
    status: OrderStatus


class ReservationReply(BaseModel):
    """Reply of ``POST /inventory/reservations`` (201) and of its release (200)."""

    reservation_id: str
    order_id: str
    status: ReservationStatus
    items: list[LineItem]


class ChargeReply(BaseModel):
    """Reply of ``POST /payments/charges`` (201)."""

    charge_id: str
    order_id: str
    amount_cents: int
    status: ChargeStatus


class RefundReply(BaseModel):
    """Reply of ``POST /payments/charges/{charge_id}/refund`` (200)."""

    refund_id: str
    charge_id: str
    order_id: str
    amount_cents: int


class ShipmentReply(BaseModel):
    """Reply of ``POST /shipping/shipments`` (201) and of its cancel (200)."""

    shipment_id: str
    order_id: str
    status: ShipmentStatus


class NotificationReply(BaseModel):
    """Reply of ``POST /notifications`` (201)."""

    notification_id: str
    order_id: str


class StockReply(BaseModel):
    """Reply of ``GET /inventory/stock/{sku}``."""

    sku: str
    available: int


class ErrorReply(BaseModel):
    """Body of every non-2xx reply.

    ``error`` is a stable machine-readable code (``card_declined``,
    ``out_of_stock``, ``shipping_unavailable``, ...); ``message`` names the thing
    and the fix. ``retryable`` is true only for transient failures (5xx), which
    are never stored under the idempotency key, so a retry with the same key
    may succeed.
    """

    error: str
    message: str
    retryable: bool = False
    sku: str | None = None
    header: str | None = None
    details: list[dict[str, Any]] | None = None


# --- knobs ------------------------------------------------------------------


class Knobs(BaseModel):
    """Failure knobs of the services, shared by all five; replaced whole on update.

    Defaults give one trigger per failure kind, so a saga test picks a failure by
    its input alone: card ``tok_declined`` is declined, ``SKU-OOS`` is out of
    stock, zip ``99999`` is a permanent shipping outage, zip ``55555`` is flaky.

    Attributes:
        declined_cards: card tokens whose charge gets 402 ``card_declined``.
        out_of_stock_skus: SKUs whose reservation gets 409 ``out_of_stock``.
        default_stock: units a SKU starts with when first seen (after a reset).
        stock: starting units for given SKUs, overriding ``default_stock``.
        shipping_outage: every shipment gets 503 while true.
        shipping_outage_zips: zips whose shipments always get 503.
        flaky_zips: zips whose shipments get 503 on the first
            ``flaky_failures`` calls of each Idempotency-Key, then succeed.
        flaky_failures: see ``flaky_zips``.
        refund_outage: every refund gets 503 while true.
        refund_failing_cards: card tokens whose refunds always get 503.
        latency_ms: delay added to every call of a service, by service name.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    declined_cards: frozenset[str] = frozenset({"tok_declined"})
    out_of_stock_skus: frozenset[str] = frozenset({"SKU-OOS"})
    default_stock: NonNegativeInt = 1000
    stock: dict[str, NonNegativeInt] = Field(default_factory=dict)
    shipping_outage: bool = False
    shipping_outage_zips: frozenset[str] = frozenset({"99999"})
    flaky_zips: frozenset[str] = frozenset({"55555"})
    flaky_failures: NonNegativeInt = 2
    refund_outage: bool = False
    refund_failing_cards: frozenset[str] = frozenset()
    latency_ms: dict[ServiceName, NonNegativeInt] = Field(default_factory=dict)


# --- admin ------------------------------------------------------------------


class OrderRecord(BaseModel):
    """An order as the order service holds it."""

    order_id: str
    customer_id: str
    items: list[LineItem]
    amount_cents: int
    card_token: str
    shipping_zip: str
    status: OrderStatus


class ReservationRecord(BaseModel):
    """A reservation as the inventory service holds it."""

    reservation_id: str
    order_id: str
    items: list[LineItem]
    status: ReservationStatus


class ChargeRecord(BaseModel):
    """A charge (and its refund, if any) as the payment service holds it."""

    charge_id: str
    order_id: str
    amount_cents: int
    card_token: str
    status: ChargeStatus
    refund_id: str | None = None
    refunded_cents: int = 0


class ShipmentRecord(BaseModel):
    """A shipment as the shipping service holds it."""

    shipment_id: str
    order_id: str
    shipping_zip: str
    items: list[LineItem]
    status: ShipmentStatus


class NotificationRecord(BaseModel):
    """A notification as the notification service holds it."""

    notification_id: str
    order_id: str
    message: str


class ServiceStats(BaseModel):
    """Counters of one service, in ``GET /admin/stats``.

    Attributes:
        effects: per operation, how many distinct idempotency keys were applied.
        replays: duplicate calls answered from the idempotency store.
        max_applications_per_key: most times one key's effect ran; 1 when
            idempotency holds (0 before any call).
        transient_failures: 5xx replies (not stored; the caller retries).
        counters: business counters, e.g. ``amount_charged_cents``.
        ledger: per ``operation:action key``, its effect now: ``applied``, ``undone``
            or ``tombstone`` (undone before it arrived; the action is refused).
    """

    effects: dict[str, int]
    replays: int
    max_applications_per_key: int
    transient_failures: int
    counters: dict[str, int]
    ledger: dict[str, str] = {}


class StatsReply(BaseModel):
    """Reply of ``GET /admin/stats``: one entry per service."""

    services: dict[ServiceName, ServiceStats]


class OrderEffects(BaseModel):
    """Reply of ``GET /admin/orders/{order_id}``: what every service knows of it."""

    order_id: str
    order: OrderRecord | None = None
    reservations: list[ReservationRecord]
    charges: list[ChargeRecord]
    shipments: list[ShipmentRecord]
    notifications: list[NotificationRecord]


class ResetRequest(BaseModel):
    """Optional body of ``POST /admin/reset``; knobs are kept unless given."""

    knobs: Knobs | None = None


class ResetReply(BaseModel):
    """Reply of ``POST /admin/reset``."""

    knobs: Knobs
