"""The five services as one set, and the admin API over them (mounted at /admin).

The admin API exists for tests and demos: it changes failure knobs at run time,
reports per-service counters (is idempotency holding?), shows what every
service knows about one order, and resets state between tests.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from examples.order_fulfillment.base import ParticipantServer
from examples.order_fulfillment.idempotency import json_response, parse_body
from examples.order_fulfillment.knobs import KnobsBox
from examples.order_fulfillment.models import (
    ErrorReply,
    Knobs,
    OrderEffects,
    ResetReply,
    ResetRequest,
    ServiceName,
    StatsReply,
)
from examples.order_fulfillment.servers import (
    InventoryServer,
    NotificationServer,
    OrderServer,
    PaymentServer,
    ShippingServer,
)


class ServiceSet:
    """The five services sharing one set of knobs.

    Args:
        knobs: initial failure knobs; defaults to :class:`Knobs` defaults.
    """

    def __init__(self, knobs: Knobs | None = None) -> None:
        self.knobs = KnobsBox(knobs)
        self.orders = OrderServer(self.knobs)
        self.inventory = InventoryServer(self.knobs)
        self.payments = PaymentServer(self.knobs)
        self.shipping = ShippingServer(self.knobs)
        self.notifications = NotificationServer(self.knobs)

    @property
    def services(self) -> dict[ServiceName, ParticipantServer]:
        """The services by name (also their mount prefix without the slash)."""
        all_services: list[ParticipantServer] = [
            self.orders,
            self.inventory,
            self.payments,
            self.shipping,
            self.notifications,
        ]
        return {service.name: service for service in all_services}

    def reset(self, knobs: Knobs | None = None) -> None:
        """Clear every service's state; replace the knobs only if given."""
        for service in self.services.values():
            service.reset()
        if knobs is not None:
            self.knobs.current = knobs

    def stats(self) -> StatsReply:
        """Counters of every service."""
        return StatsReply(services={name: s.stats() for name, s in self.services.items()})

    def order_effects(self, order_id: str) -> OrderEffects:
        """Everything the five services hold about ``order_id``."""
        return OrderEffects(
            order_id=order_id,
            order=self.orders.orders.get(order_id),
            reservations=[
                r for r in self.inventory.reservations.values() if r.order_id == order_id
            ],
            charges=[c for c in self.payments.charges.values() if c.order_id == order_id],
            shipments=[s for s in self.shipping.shipments.values() if s.order_id == order_id],
            notifications=[
                n for n in self.notifications.notifications.values() if n.order_id == order_id
            ],
        )


def admin_app(service_set: ServiceSet) -> web.Application:
    """Build the admin sub-application.

    Routes (relative to ``/admin``): ``GET /knobs``, ``POST /knobs`` (partial
    update), ``GET /stats``, ``GET /orders/{order_id}``, ``POST /reset``.
    """

    async def get_knobs(request: web.Request) -> web.Response:
        return json_response(200, service_set.knobs.current)

    async def post_knobs(request: web.Request) -> web.Response:
        changes = await _json_object(request)
        if isinstance(changes, web.Response):
            return changes
        try:
            return json_response(200, service_set.knobs.patch(changes))
        except ValidationError as exc:
            error = ErrorReply(
                error="invalid_knobs",
                message=(
                    "POST /admin/knobs: knobs unchanged; fix the names or values in "
                    f"details (known knobs: {', '.join(Knobs.model_fields)})"
                ),
                details=_errors(exc),
            )
            return json_response(422, error)

    async def get_stats(request: web.Request) -> web.Response:
        return json_response(200, service_set.stats())

    async def get_order(request: web.Request) -> web.Response:
        return json_response(200, service_set.order_effects(request.match_info["order_id"]))

    async def post_reset(request: web.Request) -> web.Response:
        body = await parse_body(request, ResetRequest)
        if isinstance(body, web.Response):
            return body
        service_set.reset(body.knobs)
        return json_response(200, ResetReply(knobs=service_set.knobs.current))

    app = web.Application()
    app.add_routes(
        [
            web.get("/knobs", get_knobs),
            web.post("/knobs", post_knobs),
            web.get("/stats", get_stats),
            web.get("/orders/{order_id}", get_order),
            web.post("/reset", post_reset),
        ]
    )
    return app


async def _json_object(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        data = await request.json()
    except ValueError as exc:
        data = exc
    if not isinstance(data, dict):
        error = ErrorReply(
            error="invalid_json",
            message=f"{request.method} {request.path}: send a JSON object of knob names "
            'to values, e.g. {"refund_outage": true}',
        )
        return json_response(400, error)
    return data


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    # Round-trip through JSON: raw error dicts may hold non-serialisable context.
    errors: list[dict[str, Any]] = json.loads(exc.json(include_url=False))
    return errors
