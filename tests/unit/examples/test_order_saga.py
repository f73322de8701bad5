"""The README's test-kit example, run for real against the order saga (no broker)."""

from __future__ import annotations

from pathlib import Path

import httpx

from coordinator import BusinessFailure
from coordinator.testing import SagaTestKit
from examples.order_fulfillment import saga as saga_module
from examples.order_fulfillment.models import CreateOrderRequest, LineItem
from examples.order_fulfillment.participants import PARTICIPANTS, PAYMENTS, service_urls
from examples.order_fulfillment.saga import ORDER_SAGA
from tests.readme import README, python_block

ITEM = {"sku": "S", "quantity": 1}
REPLIES = {  # valid bodies of each participant's create endpoint
    "/orders": {"order_id": "42", "status": "created"},
    "/inventory/reservations": {
        "reservation_id": "r-1",
        "order_id": "42",
        "status": "reserved",
        "items": [ITEM],
    },
    "/payments/charges": {
        "charge_id": "c-1",
        "order_id": "42",
        "amount_cents": 100,
        "status": "charged",
    },
    "/shipping/shipments": {"shipment_id": "s-1", "order_id": "42", "status": "created"},
    "/notifications": {"notification_id": "n-1", "order_id": "42"},
}


def handler(request: httpx.Request) -> httpx.Response:
    """A happy participant: every create answers 201, every compensation 200."""
    path = request.url.path
    if path in REPLIES:
        return httpx.Response(201, json=REPLIES[path])
    return httpx.Response(200, json={})


ORDER = CreateOrderRequest(
    order_id="42",
    customer_id="c",
    items=[LineItem(sku="S", quantity=1)],
    amount_cents=100,
    card_token="tok",
    shipping_zip="10001",
)


async def test_declined_card_releases_inventory_then_cancels_the_order() -> None:
    # the README's example ("Testing a saga without a broker"), as it is written there
    namespace = {
        "BusinessFailure": BusinessFailure,
        "ORDER_SAGA": ORDER_SAGA,
        "SagaTestKit": SagaTestKit,
        "handler": handler,
        "httpx": httpx,
        "order": ORDER,
        "service_urls": service_urls,
    }
    code = "async def example():\n" + "".join(
        f"    {line}\n" for line in python_block("### Testing a saga without a broker").splitlines()
    )
    exec(code, namespace)
    await namespace["example"]()


async def test_all_five_steps_complete_over_http() -> None:
    async with SagaTestKit(
        ORDER_SAGA, transport=httpx.MockTransport(handler), service_urls=service_urls("http://test")
    ) as kit:
        run = await kit.run(ORDER)
    assert run.status == "completed", run.events
    assert list(run.steps.values()) == ["succeeded"] * 5
    assert run.completed == [
        "create_order",
        "reserve_inventory",
        "charge_payment",
        "ship",
        "notify",
    ]


def test_the_readme_shows_the_saga_as_it_is() -> None:
    source = Path(saga_module.__file__ or "").read_text().replace("  # fmt: skip", "")
    section = README.read_text().split("## Defining a saga", 1)[1]
    shown = section.split("```python\n", 1)[1].split("```\n", 1)[0]
    assert shown in source


def test_every_participant_is_declared_once_and_the_saga_uses_the_declarations() -> None:
    assert [s.service for s in ORDER_SAGA.steps] == list(PARTICIPANTS)
    assert len({p.name for p in PARTICIPANTS}) == len({p.mount for p in PARTICIPANTS}) == 5
    charge = ORDER_SAGA.steps[ORDER_SAGA.index("charge_payment")]
    assert charge.action == PAYMENTS.charge.call(saga_module.charge)
    assert charge.output_model() is PAYMENTS.charge.reply
