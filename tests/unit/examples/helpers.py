"""Request builders shared by the service tests."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel

from examples.order_fulfillment.models import (
    ChargeRequest,
    CreateOrderRequest,
    CreateShipmentRequest,
    Knobs,
    LineItem,
    ReserveInventoryRequest,
    StatsReply,
)

ITEMS = [LineItem(sku="SKU-1", quantity=2), LineItem(sku="SKU-2", quantity=1)]


def order(order_id: str = "o-1", **changes: Any) -> CreateOrderRequest:
    fields: dict[str, Any] = {
        "order_id": order_id,
        "customer_id": "c-1",
        "items": ITEMS,
        "amount_cents": 4200,
        "card_token": "tok_ok",
        "shipping_zip": "10001",
    }
    return CreateOrderRequest(**{**fields, **changes})


def reservation(
    order_id: str = "o-1", items: list[LineItem] | None = None
) -> ReserveInventoryRequest:
    return ReserveInventoryRequest(order_id=order_id, items=items or ITEMS)


def charge(order_id: str = "o-1", card_token: str = "tok_ok", amount: int = 4200) -> ChargeRequest:
    return ChargeRequest(order_id=order_id, amount_cents=amount, card_token=card_token)


def shipment(order_id: str = "o-1", zip_code: str = "10001") -> CreateShipmentRequest:
    return CreateShipmentRequest(order_id=order_id, shipping_zip=zip_code, items=ITEMS)


async def post(
    client: httpx.AsyncClient, path: str, body: BaseModel | None = None, *, key: str | None
) -> httpx.Response:
    """POST a model as JSON, with ``key`` as Idempotency-Key (None: no header)."""
    headers = {"Idempotency-Key": key} if key is not None else {}
    content = body.model_dump_json() if body is not None else b""
    return await client.post(
        path, content=content, headers={"Content-Type": "application/json", **headers}
    )


async def stats(client: httpx.AsyncClient) -> StatsReply:
    response = await client.get("/admin/stats")
    assert response.status_code == 200
    return StatsReply.model_validate_json(response.content)


async def set_knobs(client: httpx.AsyncClient, **changes: Any) -> Knobs:
    response = await client.post("/admin/knobs", json=changes)
    assert response.status_code == 200, response.text
    return Knobs.model_validate_json(response.content)
