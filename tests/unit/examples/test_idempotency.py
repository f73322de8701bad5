"""Idempotency-Key semantics: replay, concurrency, missing and reused keys."""

from __future__ import annotations

import asyncio

import httpx

from examples.order_fulfillment.models import NotificationRequest
from examples.order_fulfillment.services import ServiceSet
from tests.unit.examples.helpers import charge, order, post, stats


async def test_repeat_with_same_key_replays_the_stored_reply(client: httpx.AsyncClient) -> None:
    first = await post(client, "/payments/charges", charge(), key="saga-1:charge")
    second = await post(client, "/payments/charges", charge(), key="saga-1:charge")
    assert first.status_code == second.status_code == 201
    assert first.content == second.content
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"

    payments = (await stats(client)).services["payments"]
    assert payments.effects == {"charge": 1}
    assert payments.replays == 1
    assert payments.max_applications_per_key == 1
    assert payments.counters["amount_charged_cents"] == 4200


async def test_business_failures_are_stored_and_replayed(client: httpx.AsyncClient) -> None:
    declined = charge(card_token="tok_declined")
    first = await post(client, "/payments/charges", declined, key="k")
    # Even with the card no longer declined, the key answers what it answered.
    await client.post("/admin/knobs", json={"declined_cards": []})
    second = await post(client, "/payments/charges", declined, key="k")
    assert first.status_code == second.status_code == 402
    assert first.content == second.content
    payments = (await stats(client)).services["payments"]
    assert payments.replays == 1
    assert payments.counters["charges_declined"] == 1


async def test_concurrent_duplicates_apply_once(
    client: httpx.AsyncClient, service_set: ServiceSet
) -> None:
    # Latency widens the window in which all ten are in flight together.
    await client.post("/admin/knobs", json={"latency_ms": {"orders": 50}})
    calls = [post(client, "/orders", order(), key="same") for _ in range(10)]
    replies = await asyncio.gather(*calls)

    assert {r.status_code for r in replies} == {201}
    assert len({r.content for r in replies}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in replies) == 9
    orders = (await stats(client)).services["orders"]
    assert orders.effects == {"create": 1}
    assert orders.replays == 9
    assert orders.max_applications_per_key == 1
    assert orders.counters["orders_created"] == 1
    assert list(service_set.orders.orders) == ["o-1"]


async def test_concurrent_duplicate_notifications_send_once(client: httpx.AsyncClient) -> None:
    # Notifications have no state-based dedupe, so only the key lock stands
    # between ten overlapping duplicates and ten messages to the customer.
    await client.post("/admin/knobs", json={"latency_ms": {"notifications": 50}})
    note = NotificationRequest(order_id="o-1", message="shipped")
    replies = await asyncio.gather(
        *(post(client, "/notifications", note, key="n") for _ in range(10))
    )
    assert {r.status_code for r in replies} == {201}
    assert len({r.json()["notification_id"] for r in replies}) == 1
    notifications = (await stats(client)).services["notifications"]
    assert notifications.counters["notifications_sent"] == 1
    assert notifications.max_applications_per_key == 1


async def test_concurrent_duplicate_refunds_refund_once(client: httpx.AsyncClient) -> None:
    charge_id = (await post(client, "/payments/charges", charge(), key="c")).json()["charge_id"]
    path = f"/payments/charges/{charge_id}/refund"
    replies = await asyncio.gather(*(post(client, path, key="refund") for _ in range(10)))
    assert {r.status_code for r in replies} == {200}
    payments = (await stats(client)).services["payments"]
    assert payments.counters["amount_refunded_cents"] == 4200
    assert payments.counters["refunds"] == 1


async def test_missing_key_is_400_naming_the_header(client: httpx.AsyncClient) -> None:
    for path, body in [("/orders", order()), ("/payments/charges", charge())]:
        response = await post(client, path, body, key=None)
        assert response.status_code == 400
        error = response.json()
        assert error["error"] == "missing_idempotency_key"
        assert error["header"] == "Idempotency-Key"
        assert "Idempotency-Key" in error["message"]
    assert (await stats(client)).services["orders"].counters["orders_created"] == 0


async def test_key_reused_for_a_different_request_is_rejected(client: httpx.AsyncClient) -> None:
    assert (await post(client, "/payments/charges", charge(), key="k")).status_code == 201
    other = await post(client, "/payments/charges", charge(amount=1), key="k")
    assert other.status_code == 422
    assert other.json()["error"] == "idempotency_key_reused"
    payments = (await stats(client)).services["payments"]
    assert payments.counters["amount_charged_cents"] == 4200


async def test_keys_are_scoped_per_operation(client: httpx.AsyncClient) -> None:
    # One key used by two different operations of a service is two requests.
    created = await post(client, "/orders", order(), key="k")
    cancelled = await post(client, "/orders/o-1/cancel", key="k")
    assert (created.status_code, cancelled.status_code) == (201, 200)
    assert (await stats(client)).services["orders"].effects == {"create": 1, "cancel": 1}
