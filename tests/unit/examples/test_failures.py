"""Failure knobs: business failures, outages, flaky shipping, refund outage, latency."""

from __future__ import annotations

import time

import httpx

from examples.order_fulfillment.models import ErrorReply, LineItem, OrderEffects
from tests.unit.examples.helpers import charge, post, reservation, set_knobs, shipment, stats


async def test_declined_card_is_402_and_charges_nothing(client: httpx.AsyncClient) -> None:
    response = await post(client, "/payments/charges", charge(card_token="tok_declined"), key="k")
    assert response.status_code == 402
    error = ErrorReply.model_validate_json(response.content)
    assert (error.error, error.retryable) == ("card_declined", False)
    view = OrderEffects.model_validate_json((await client.get("/admin/orders/o-1")).content)
    assert view.charges == []
    assert (await stats(client)).services["payments"].counters["amount_charged_cents"] == 0


async def test_out_of_stock_is_409_naming_the_sku_and_reserves_nothing(
    client: httpx.AsyncClient,
) -> None:
    items = [LineItem(sku="SKU-1", quantity=1), LineItem(sku="SKU-OOS", quantity=1)]
    response = await post(client, "/inventory/reservations", reservation(items=items), key="k")
    assert response.status_code == 409
    assert response.json()["error"] == "out_of_stock"
    assert response.json()["sku"] == "SKU-OOS"
    # All or nothing: the in-stock line was not taken either.
    assert (await client.get("/inventory/stock/SKU-1")).json()["available"] == 1000
    inventory = (await stats(client)).services["inventory"]
    assert inventory.counters["units_reserved"] == 0


async def test_stock_runs_out(client: httpx.AsyncClient) -> None:
    await set_knobs(client, stock={"RARE": 3})
    two = [LineItem(sku="RARE", quantity=2)]
    assert (
        await post(client, "/inventory/reservations", reservation(items=two), key="a")
    ).status_code == 201
    second = await post(client, "/inventory/reservations", reservation(items=two), key="b")
    assert second.status_code == 409
    assert "1 available" in second.json()["message"]


async def test_shipping_outage_is_503_and_not_stored(client: httpx.AsyncClient) -> None:
    await set_knobs(client, shipping_outage=True)
    down = await post(client, "/shipping/shipments", shipment(), key="saga-1:ship")
    assert down.status_code == 503
    assert down.json() | {"message": ""} == {
        "error": "shipping_unavailable",
        "message": "",
        "retryable": True,
    }
    await set_knobs(client, shipping_outage=False)
    up = await post(client, "/shipping/shipments", shipment(), key="saga-1:ship")
    assert up.status_code == 201
    assert "Idempotent-Replayed" not in up.headers
    shipping = (await stats(client)).services["shipping"]
    assert shipping.transient_failures == 1
    assert shipping.counters["shipments_created"] == 1


async def test_outage_zip_always_fails(client: httpx.AsyncClient) -> None:
    for _ in range(5):
        response = await post(client, "/shipping/shipments", shipment(zip_code="99999"), key="k")
        assert response.status_code == 503
    assert (await stats(client)).services["shipping"].effects == {}


async def test_flaky_zip_fails_exactly_n_times_then_succeeds(client: httpx.AsyncClient) -> None:
    await set_knobs(client, flaky_failures=3)
    flaky = shipment(zip_code="55555")
    codes = [
        (await post(client, "/shipping/shipments", flaky, key="k1")).status_code for _ in range(5)
    ]
    assert codes == [503, 503, 503, 201, 201]
    # Counted per key: another saga's shipment fails its own first three calls.
    other = await post(client, "/shipping/shipments", flaky, key="k2")
    assert other.status_code == 503
    shipping = (await stats(client)).services["shipping"]
    assert shipping.counters["shipments_created"] == 1
    assert shipping.replays == 1
    assert shipping.transient_failures == 4


async def test_refund_outage_then_operator_retry(client: httpx.AsyncClient) -> None:
    charged = await post(client, "/payments/charges", charge(), key="charge")
    refund_path = f"/payments/charges/{charged.json()['charge_id']}/refund"
    await set_knobs(client, refund_outage=True)
    for _ in range(3):
        failed = await post(client, refund_path, key="refund")
        assert failed.status_code == 503
        assert failed.json()["error"] == "refund_unavailable"
    await set_knobs(client, refund_outage=False)
    retried = await post(client, refund_path, key="refund")
    assert retried.status_code == 200
    assert retried.json()["amount_cents"] == 4200
    assert (await stats(client)).services["payments"].counters["amount_refunded_cents"] == 4200


async def test_refund_failing_card(client: httpx.AsyncClient) -> None:
    await set_knobs(client, refund_failing_cards=["tok_sticky"])
    charged = await post(client, "/payments/charges", charge(card_token="tok_sticky"), key="c")
    refund_path = f"/payments/charges/{charged.json()['charge_id']}/refund"
    assert (await post(client, refund_path, key="r")).status_code == 503


async def test_latency_knob_slows_only_its_service(client: httpx.AsyncClient) -> None:
    await set_knobs(client, latency_ms={"payments": 200})
    started = time.monotonic()
    assert (await post(client, "/payments/charges", charge(), key="k")).status_code == 201
    assert time.monotonic() - started >= 0.19
    # Only a lower bound is asserted: the test machine may be slow, never fast.
    knobs = (await client.get("/admin/knobs")).json()
    assert knobs["latency_ms"] == {"payments": 200}
