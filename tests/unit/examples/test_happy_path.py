"""The order saga's forward path against the real services, step by step."""

from __future__ import annotations

import httpx

from examples.order_fulfillment.models import (
    ChargeReply,
    NotificationReply,
    NotificationRequest,
    OrderEffects,
    OrderRecord,
    OrderReply,
    ReservationReply,
    ShipmentReply,
    StockReply,
)
from tests.unit.examples.helpers import charge, order, post, reservation, shipment, stats


async def test_every_step_succeeds_and_admin_sees_the_order(client: httpx.AsyncClient) -> None:
    created = await post(client, "/orders", order(), key="saga-1:create")
    assert created.status_code == 201
    assert OrderReply.model_validate_json(created.content).status == "created"

    reserved = await post(client, "/inventory/reservations", reservation(), key="saga-1:reserve")
    assert reserved.status_code == 201
    assert ReservationReply.model_validate_json(reserved.content).status == "reserved"

    charged = await post(client, "/payments/charges", charge(), key="saga-1:charge")
    assert charged.status_code == 201
    assert ChargeReply.model_validate_json(charged.content).amount_cents == 4200

    shipped = await post(client, "/shipping/shipments", shipment(), key="saga-1:ship")
    assert shipped.status_code == 201
    assert ShipmentReply.model_validate_json(shipped.content).status == "created"

    note = NotificationRequest(order_id="o-1", message="your order is on its way")
    notified = await post(client, "/notifications", note, key="saga-1:notify")
    assert notified.status_code == 201
    NotificationReply.model_validate_json(notified.content)

    view = OrderEffects.model_validate_json((await client.get("/admin/orders/o-1")).content)
    assert view.order is not None and view.order.status == "created"
    assert [r.status for r in view.reservations] == ["reserved"]
    assert [(c.status, c.amount_cents) for c in view.charges] == [("charged", 4200)]
    assert [s.status for s in view.shipments] == ["created"]
    assert [n.message for n in view.notifications] == ["your order is on its way"]

    counters = {name: s.counters for name, s in (await stats(client)).services.items()}
    assert counters["orders"]["orders_created"] == 1
    assert counters["inventory"]["units_reserved"] == 3
    assert counters["payments"]["amount_charged_cents"] == 4200
    assert counters["shipping"]["shipments_created"] == 1
    assert counters["notifications"]["notifications_sent"] == 1


async def test_reads_are_plain_gets(client: httpx.AsyncClient) -> None:
    await post(client, "/orders", order(), key="k")
    got = await client.get("/orders/o-1")
    assert got.status_code == 200
    assert OrderRecord.model_validate_json(got.content).shipping_zip == "10001"
    missing = await client.get("/orders/nope")
    assert missing.status_code == 404
    assert missing.json()["error"] == "order_not_found"

    before = StockReply.model_validate_json((await client.get("/inventory/stock/SKU-1")).content)
    await post(client, "/inventory/reservations", reservation(), key="r")
    after = StockReply.model_validate_json((await client.get("/inventory/stock/SKU-1")).content)
    assert before.available - after.available == 2


async def test_same_order_id_under_a_new_key_is_a_conflict(client: httpx.AsyncClient) -> None:
    assert (await post(client, "/orders", order(), key="k1")).status_code == 201
    again = await post(client, "/orders", order(), key="k2")
    assert again.status_code == 409
    assert again.json()["error"] == "order_exists"
    assert "original key" in again.json()["message"]


async def test_invalid_body_is_422_with_details_and_not_stored(client: httpx.AsyncClient) -> None:
    bad = await client.post(
        "/payments/charges",
        json={"order_id": "o-1", "amount_cents": -5, "card_token": "tok_ok"},
        headers={"Idempotency-Key": "k"},
    )
    assert bad.status_code == 422
    assert bad.json()["error"] == "invalid_request"
    assert bad.json()["details"][0]["loc"] == ["amount_cents"]
    # Validation errors are the caller's bug, not an effect: the key stays free.
    assert (await post(client, "/payments/charges", charge(), key="k")).status_code == 201

    not_json = await client.post(
        "/payments/charges", content=b"{oops", headers={"Idempotency-Key": "k2"}
    )
    assert not_json.status_code == 400
    assert not_json.json()["error"] == "invalid_json"
