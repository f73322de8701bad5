"""Compensations: each undoes its step exactly once, and unknown ids are 404."""

from __future__ import annotations

import httpx
import pytest

from examples.order_fulfillment.models import (
    OrderEffects,
    OrderReply,
    RefundReply,
    ReservationReply,
    ShipmentReply,
)
from tests.unit.examples.helpers import charge, order, post, reservation, shipment, stats


async def test_refund_returns_the_charged_amount_once(client: httpx.AsyncClient) -> None:
    charged = await post(client, "/payments/charges", charge(amount=1234), key="c")
    path = f"/payments/charges/{charged.json()['charge_id']}/refund"

    first = await post(client, path, key="refund-1")
    replay = await post(client, path, key="refund-1")
    # A second compensation under a fresh key (e.g. an operator's) changes nothing.
    fresh = await post(client, path, key="refund-2")
    refunds = [RefundReply.model_validate_json(r.content) for r in (first, replay, fresh)]
    assert {r.amount_cents for r in refunds} == {1234}
    assert len({r.refund_id for r in refunds}) == 1

    payments = (await stats(client)).services["payments"]
    assert payments.counters["refunds"] == 1
    assert payments.counters["amount_refunded_cents"] == 1234
    view = OrderEffects.model_validate_json((await client.get("/admin/orders/o-1")).content)
    assert [(c.status, c.refunded_cents) for c in view.charges] == [("refunded", 1234)]


async def test_release_returns_stock_once(client: httpx.AsyncClient) -> None:
    reserved = await post(client, "/inventory/reservations", reservation(), key="r")
    reservation_id = ReservationReply.model_validate_json(reserved.content).reservation_id
    assert (await client.get("/inventory/stock/SKU-1")).json()["available"] == 998

    path = f"/inventory/reservations/{reservation_id}/release"
    for key in ("release-1", "release-1", "release-2"):
        released = await post(client, path, key=key)
        assert released.status_code == 200
        assert ReservationReply.model_validate_json(released.content).status == "released"

    assert (await client.get("/inventory/stock/SKU-1")).json()["available"] == 1000
    assert (await client.get("/inventory/stock/SKU-2")).json()["available"] == 1000
    inventory = (await stats(client)).services["inventory"]
    assert inventory.counters["units_released"] == 3
    assert inventory.counters["reservations_released"] == 1


async def test_cancel_shipment_and_order_once(client: httpx.AsyncClient) -> None:
    await post(client, "/orders", order(), key="o")
    shipped = await post(client, "/shipping/shipments", shipment(), key="s")
    shipment_id = shipped.json()["shipment_id"]
    for key in ("cancel-1", "cancel-2"):
        cancelled = await post(client, f"/shipping/shipments/{shipment_id}/cancel", key=key)
        assert ShipmentReply.model_validate_json(cancelled.content).status == "cancelled"
        order_cancelled = await post(client, "/orders/o-1/cancel", key=key)
        assert OrderReply.model_validate_json(order_cancelled.content).status == "cancelled"
    counters = {name: s.counters for name, s in (await stats(client)).services.items()}
    assert counters["shipping"]["shipments_cancelled"] == 1
    assert counters["orders"]["orders_cancelled"] == 1


async def test_compensation_accepts_a_reason_body(client: httpx.AsyncClient) -> None:
    await post(client, "/orders", order(), key="o")
    response = await client.post(
        "/orders/o-1/cancel", json={"reason": "card declined"}, headers={"Idempotency-Key": "c"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/orders/nope/cancel", "order_not_found"),
        ("/inventory/reservations/nope/release", "reservation_not_found"),
        ("/payments/charges/nope/refund", "charge_not_found"),
        ("/shipping/shipments/nope/cancel", "shipment_not_found"),
    ],
)
async def test_compensating_something_unknown_is_404(
    client: httpx.AsyncClient, path: str, error: str
) -> None:
    response = await post(client, path, key="k")
    assert response.status_code == 404
    assert response.json()["error"] == error
    assert "'nope'" in response.json()["message"]
