"""The HTTP servers of the five saga participants: state, operations and routes of each.

Each server owns its in-memory state, an idempotency store and business counters (see
:class:`~examples.order_fulfillment.base.ParticipantServer`), and builds its own aiohttp
sub-application, mounted where its participant's declaration says
(:mod:`~examples.order_fulfillment.participants`, which also names the paths and models
the saga calls).

Compensations are idempotent twice over: by Idempotency-Key (a retry replays
the stored reply) and by state (a second cancel/release/refund under a new key
answers 200 with the current record and changes nothing), so a refund returns
exactly the charged amount once and a release returns stock once.

Each compensation also exists keyed by the action it undoes (``POST .../undo`` with
header ``Saga-Compensates: <action key>``): the saga uses these, so it can undo an
action whose reply it never saw (a timeout, a 5xx after the effect). That is the
participant contract; see ``idempotency.undo_handler``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from aiohttp import web

from examples.order_fulfillment.base import ParticipantServer, error_outcome, new_id
from examples.order_fulfillment.idempotency import (
    Call,
    Outcome,
    json_response,
)
from examples.order_fulfillment.models import (
    ChargeRecord,
    ChargeReply,
    ChargeRequest,
    CompensationRequest,
    CreateOrderRequest,
    CreateShipmentRequest,
    NotificationRecord,
    NotificationReply,
    NotificationRequest,
    OrderRecord,
    OrderReply,
    RefundReply,
    ReservationRecord,
    ReservationReply,
    ReserveInventoryRequest,
    ShipmentRecord,
    ShipmentReply,
    StockReply,
)
from examples.order_fulfillment.participants import (
    INVENTORY,
    NOTIFICATIONS,
    ORDERS,
    PAYMENTS,
    SHIPPING,
)


class OrderServer(ParticipantServer):
    """Orders: create, cancel (compensation), read."""

    participant = ORDERS
    counter_names = ("orders_created", "orders_cancelled")

    def _clear_state(self) -> None:
        self.orders: dict[str, OrderRecord] = {}

    def routes(self) -> Iterable[web.RouteDef]:
        return [
            *self.endpoint(ORDERS.create, self.create, undo=self.undo_create),
            web.post(
                "/{order_id}/cancel",
                self.idempotent("cancel", CompensationRequest, self.cancel),
            ),
            web.get("/{order_id}", self.read_only(self.read)),
        ]

    async def create(self, call: Call[CreateOrderRequest]) -> Outcome:
        """Create an order; 409 ``order_exists`` if its id was created under another key."""
        body = call.body
        if body.order_id in self.orders:
            return error_outcome(
                409,
                "order_exists",
                f"order {body.order_id!r} already exists (created with another "
                "Idempotency-Key); retry with the original key or use a new order_id",
            )
        self.orders[body.order_id] = OrderRecord(**body.model_dump(), status="created")
        self.counters["orders_created"] += 1
        return Outcome(201, OrderReply(order_id=body.order_id, status="created"))

    async def cancel(self, call: Call[CompensationRequest]) -> Outcome:
        """Cancel an order (once); 404 ``order_not_found`` for an unknown id."""
        return self._cancel(call.path["order_id"])

    async def undo_create(self, stored: str) -> Outcome:
        """Cancel the order a ``create`` made (the saga's compensation)."""
        return self._cancel(OrderReply.model_validate_json(stored).order_id)

    def _cancel(self, order_id: str) -> Outcome:
        order = self.orders.get(order_id)
        if order is None:
            return _order_not_found(order_id)
        if order.status != "cancelled":
            order.status = "cancelled"
            self.counters["orders_cancelled"] += 1
        return Outcome(200, OrderReply(order_id=order_id, status=order.status))

    async def read(self, request: web.Request) -> web.Response:
        """``GET /orders/{order_id}``: the order record."""
        order = self.orders.get(request.match_info["order_id"])
        if order is None:
            outcome = _order_not_found(request.match_info["order_id"])
            return json_response(outcome.status, outcome.body)
        return json_response(200, order)


def _order_not_found(order_id: str) -> Outcome:
    return error_outcome(
        404, "order_not_found", f"no order {order_id!r}; create it first with POST /orders"
    )


class InventoryServer(ParticipantServer):
    """Inventory: reserve all items of an order or none, release (compensation)."""

    participant = INVENTORY
    counter_names = (
        "reservations_created",
        "reservations_rejected",
        "reservations_released",
        "units_reserved",
        "units_released",
    )

    def _clear_state(self) -> None:
        self.stock: dict[str, int] = {}
        self.reservations: dict[str, ReservationRecord] = {}

    def routes(self) -> Iterable[web.RouteDef]:
        return [
            *self.endpoint(INVENTORY.reserve, self.reserve, undo=self.undo_reserve),
            web.post(
                "/reservations/{reservation_id}/release",
                self.idempotent("release", CompensationRequest, self.release),
            ),
            web.get("/stock/{sku}", self.read_only(self.read_stock)),
        ]

    def level(self, sku: str) -> int:
        """Units of ``sku`` available now; a SKU first seen starts at its knob level."""
        if sku not in self.stock:
            knobs = self.knobs.current
            self.stock[sku] = knobs.stock.get(sku, knobs.default_stock)
        return self.stock[sku]

    async def reserve(self, call: Call[ReserveInventoryRequest]) -> Outcome:
        """Reserve every item, or nothing with 409 ``out_of_stock`` naming the SKU."""
        wanted: Counter[str] = Counter()
        for item in call.body.items:
            wanted[item.sku] += item.quantity
        for sku, quantity in wanted.items():
            available = 0 if sku in self.knobs.current.out_of_stock_skus else self.level(sku)
            if available < quantity:
                self.counters["reservations_rejected"] += 1
                return error_outcome(
                    409,
                    "out_of_stock",
                    f"SKU {sku!r}: {quantity} unit(s) wanted, {available} available; "
                    "the order cannot be fulfilled (business failure, do not retry)",
                    sku=sku,
                )
        for sku, quantity in wanted.items():
            self.stock[sku] -= quantity
        record = ReservationRecord(
            reservation_id=new_id("res"),
            order_id=call.body.order_id,
            items=call.body.items,
            status="reserved",
        )
        self.reservations[record.reservation_id] = record
        self.counters["reservations_created"] += 1
        self.counters["units_reserved"] += sum(wanted.values())
        return Outcome(201, ReservationReply(**record.model_dump()))

    async def release(self, call: Call[CompensationRequest]) -> Outcome:
        """Return a reservation's units to stock (once); 404 for an unknown id."""
        return self._release(call.path["reservation_id"])

    async def undo_reserve(self, stored: str) -> Outcome:
        """Release the reservation a ``reserve`` made (the saga's compensation)."""
        return self._release(ReservationReply.model_validate_json(stored).reservation_id)

    def _release(self, reservation_id: str) -> Outcome:
        record = self.reservations.get(reservation_id)
        if record is None:
            return error_outcome(
                404,
                "reservation_not_found",
                f"no reservation {reservation_id!r}; release only ids returned by "
                "POST /inventory/reservations",
            )
        if record.status != "released":
            record.status = "released"
            for item in record.items:
                self.stock[item.sku] += item.quantity
            units = sum(item.quantity for item in record.items)
            self.counters["reservations_released"] += 1
            self.counters["units_released"] += units
        return Outcome(200, ReservationReply(**record.model_dump()))

    async def read_stock(self, request: web.Request) -> web.Response:
        """``GET /inventory/stock/{sku}``: units available."""
        sku = request.match_info["sku"]
        return json_response(200, StockReply(sku=sku, available=self.level(sku)))


class PaymentServer(ParticipantServer):
    """Payments: charge a card, refund a charge (compensation)."""

    participant = PAYMENTS
    counter_names = (
        "charges_created",
        "charges_declined",
        "refunds",
        "amount_charged_cents",
        "amount_refunded_cents",
    )

    def _clear_state(self) -> None:
        self.charges: dict[str, ChargeRecord] = {}

    def routes(self) -> Iterable[web.RouteDef]:
        return [
            *self.endpoint(PAYMENTS.charge, self.charge, undo=self.undo_charge),
            web.post(
                "/charges/{charge_id}/refund",
                self.idempotent("refund", CompensationRequest, self.refund),
            ),
        ]

    async def charge(self, call: Call[ChargeRequest]) -> Outcome:
        """Charge a card; 402 ``card_declined`` (nothing charged) for a declined card."""
        body = call.body
        if body.card_token in self.knobs.current.declined_cards:
            self.counters["charges_declined"] += 1
            return error_outcome(
                402,
                "card_declined",
                f"card {body.card_token!r} was declined for order {body.order_id!r}; "
                "nothing was charged (business failure, do not retry)",
            )
        record = ChargeRecord(
            charge_id=new_id("ch"),
            order_id=body.order_id,
            amount_cents=body.amount_cents,
            card_token=body.card_token,
            status="charged",
        )
        self.charges[record.charge_id] = record
        self.counters["charges_created"] += 1
        self.counters["amount_charged_cents"] += body.amount_cents
        return Outcome(201, ChargeReply(**record.model_dump()))

    async def refund(self, call: Call[CompensationRequest]) -> Outcome:
        """Refund the full charged amount (once); 503 during a refund outage."""
        return self._refund(call.path["charge_id"])

    async def undo_charge(self, stored: str) -> Outcome:
        """Refund the charge a ``charge`` made (the saga's compensation)."""
        return self._refund(ChargeReply.model_validate_json(stored).charge_id)

    def _refund(self, charge_id: str) -> Outcome:
        record = self.charges.get(charge_id)
        if record is None:
            return error_outcome(
                404,
                "charge_not_found",
                f"no charge {charge_id!r}; refund only ids returned by POST /payments/charges",
            )
        knobs = self.knobs.current
        if knobs.refund_outage or record.card_token in knobs.refund_failing_cards:
            return error_outcome(
                503,
                "refund_unavailable",
                f"refund of charge {charge_id!r} failed: the card processor is "
                "unavailable; retry later with the same Idempotency-Key",
            )
        if record.refund_id is None:
            record.refund_id = new_id("re")
            record.refunded_cents = record.amount_cents
            record.status = "refunded"
            self.counters["refunds"] += 1
            self.counters["amount_refunded_cents"] += record.amount_cents
        reply = RefundReply(
            refund_id=record.refund_id,
            charge_id=charge_id,
            order_id=record.order_id,
            amount_cents=record.refunded_cents,
        )
        return Outcome(200, reply)


class ShippingServer(ParticipantServer):
    """Shipping: create a shipment (outages and flaky zips), cancel (compensation)."""

    participant = SHIPPING
    counter_names = ("shipments_created", "shipments_cancelled")

    def _clear_state(self) -> None:
        self.shipments: dict[str, ShipmentRecord] = {}
        # Attempts per Idempotency-Key for flaky zips: the flaky knob is "fail
        # the first N calls of each key", so a saga's retries eventually pass.
        self.flaky_attempts: Counter[str] = Counter()

    def routes(self) -> Iterable[web.RouteDef]:
        return [
            *self.endpoint(SHIPPING.ship, self.ship, undo=self.undo_ship),
            web.post(
                "/shipments/{shipment_id}/cancel",
                self.idempotent("cancel", CompensationRequest, self.cancel),
            ),
        ]

    async def ship(self, call: Call[CreateShipmentRequest]) -> Outcome:
        """Create a shipment; 503 ``shipping_unavailable`` during an outage or flake."""
        body = call.body
        knobs = self.knobs.current
        if knobs.shipping_outage or body.shipping_zip in knobs.shipping_outage_zips:
            return _shipping_unavailable(body.shipping_zip, "outage")
        if body.shipping_zip in knobs.flaky_zips:
            self.flaky_attempts[call.key] += 1
            if self.flaky_attempts[call.key] <= knobs.flaky_failures:
                return _shipping_unavailable(body.shipping_zip, "flaky carrier")
        record = ShipmentRecord(
            shipment_id=new_id("shp"),
            order_id=body.order_id,
            shipping_zip=body.shipping_zip,
            items=body.items,
            status="created",
        )
        self.shipments[record.shipment_id] = record
        self.counters["shipments_created"] += 1
        return Outcome(201, ShipmentReply(**record.model_dump()))

    async def cancel(self, call: Call[CompensationRequest]) -> Outcome:
        """Cancel a shipment (once); 404 ``shipment_not_found`` for an unknown id."""
        return self._cancel_shipment(call.path["shipment_id"])

    async def undo_ship(self, stored: str) -> Outcome:
        """Cancel the shipment a ``ship`` made (the saga's compensation)."""
        return self._cancel_shipment(ShipmentReply.model_validate_json(stored).shipment_id)

    def _cancel_shipment(self, shipment_id: str) -> Outcome:
        record = self.shipments.get(shipment_id)
        if record is None:
            return error_outcome(
                404,
                "shipment_not_found",
                f"no shipment {shipment_id!r}; cancel only ids returned by "
                "POST /shipping/shipments",
            )
        if record.status != "cancelled":
            record.status = "cancelled"
            self.counters["shipments_cancelled"] += 1
        return Outcome(200, ShipmentReply(**record.model_dump()))


def _shipping_unavailable(zip_code: str, why: str) -> Outcome:
    return error_outcome(
        503,
        "shipping_unavailable",
        f"no carrier available for zip {zip_code!r} ({why}); retry later with the "
        "same Idempotency-Key",
    )


class NotificationServer(ParticipantServer):
    """Notifications: record a message to the customer (no compensation)."""

    participant = NOTIFICATIONS
    counter_names = ("notifications_sent",)

    def _clear_state(self) -> None:
        self.notifications: dict[str, NotificationRecord] = {}

    def routes(self) -> Iterable[web.RouteDef]:
        return self.endpoint(NOTIFICATIONS.notify, self.notify)

    async def notify(self, call: Call[NotificationRequest]) -> Outcome:
        """Send (record) a notification."""
        record = NotificationRecord(notification_id=new_id("ntf"), **call.body.model_dump())
        self.notifications[record.notification_id] = record
        self.counters["notifications_sent"] += 1
        return Outcome(201, NotificationReply(**record.model_dump()))
