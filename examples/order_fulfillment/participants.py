"""The five participants of the order saga, each declared once (eventuate's service proxies).

A participant is a coordinator :class:`~coordinator.Service` (its name keys its step topic
and ``SAGA_SERVICE_URLS``) with the path the example servers mount it under, and the
endpoints the saga calls with their request and reply models. The saga
(:mod:`~examples.order_fulfillment.saga`) builds its steps from these declarations and the
HTTP servers (:mod:`~examples.order_fulfillment.servers`) route and parse with them, so
no service name, path or model is written twice.

Every endpoint is undone by the key of the call it undoes at ``{path}/undo`` (header
``Saga-Compensates``: the participant contract), which works even when the call's reply
never arrived.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from coordinator import Http, RetryPolicy, Service, StepContext, http
from examples.order_fulfillment.models import (
    ChargeReply,
    ChargeRequest,
    CreateOrderRequest,
    CreateShipmentRequest,
    NotificationReply,
    NotificationRequest,
    OrderReply,
    ReservationReply,
    ReserveInventoryRequest,
    ServiceName,
    ShipmentReply,
)

RequestT = TypeVar("RequestT", bound=BaseModel)
ReplyT = TypeVar("ReplyT", bound=BaseModel)


@dataclass(frozen=True)
class Endpoint(Generic[RequestT, ReplyT]):
    """One idempotent ``POST`` of a participant, undone by key at ``{path}/undo``.

    Args:
        operation: the server's name for it (scopes its idempotency keys), e.g. "charge".
        path: relative to the participant's mount ("" is the mount itself).
        request: the body model.
        reply: the success reply model (the step's output).
    """

    operation: str
    path: str
    request: type[RequestT]
    reply: type[ReplyT]

    @property
    def undo_path(self) -> str:
        """Where a call is undone by its key."""
        return f"{self.path}/undo"

    def call(
        self,
        body: Callable[[StepContext[Any]], RequestT],
        *,
        transport_retry: RetryPolicy | None = None,
    ) -> Http:
        """The step action: ``POST path`` with the body ``body`` builds.

        Args:
            body: builds the request from the step's context.
            transport_retry: in-process retries of one attempt (default: the engine's).
        """
        action = http("POST", self.path, body=body, output=self.reply)
        if transport_retry is None:
            return action
        return replace(action, transport_retry=transport_retry)

    def undo(self) -> Http:
        """The step compensation: ``POST path/undo`` by the action's key."""
        return http("POST", self.undo_path)


@dataclass(frozen=True)
class Participant(Service):
    """A service of the example: a coordinator :class:`~coordinator.Service` and its mount.

    Args:
        name: what step requests are routed by (topic ``{prefix}.step.{name}``).
        mount: the path segment the example servers mount it under.
    """

    mount: ServiceName = field(kw_only=True)

    def base_url(self, servers_url: str) -> str:
        """The participant's base URL when the example servers run at ``servers_url``."""
        return f"{servers_url.rstrip('/')}/{self.mount}"


@dataclass(frozen=True)
class Orders(Participant):
    """The order service."""

    create = Endpoint("create", "", CreateOrderRequest, OrderReply)


@dataclass(frozen=True)
class Inventory(Participant):
    """The inventory service."""

    reserve = Endpoint("reserve", "/reservations", ReserveInventoryRequest, ReservationReply)


@dataclass(frozen=True)
class Payments(Participant):
    """The payment service."""

    charge = Endpoint("charge", "/charges", ChargeRequest, ChargeReply)


@dataclass(frozen=True)
class Shipping(Participant):
    """The shipping service."""

    ship = Endpoint("ship", "/shipments", CreateShipmentRequest, ShipmentReply)


@dataclass(frozen=True)
class Notifications(Participant):
    """The notification service."""

    notify = Endpoint("notify", "", NotificationRequest, NotificationReply)


ORDERS = Orders("order", mount="orders")
INVENTORY = Inventory("inventory", mount="inventory")
PAYMENTS = Payments("payment", mount="payments")
SHIPPING = Shipping("shipping", mount="shipping")
NOTIFICATIONS = Notifications("notification", mount="notifications")

PARTICIPANTS: tuple[Participant, ...] = (ORDERS, INVENTORY, PAYMENTS, SHIPPING, NOTIFICATIONS)


def service_urls(base_url: str) -> dict[str, str]:
    """``SAGA_SERVICE_URLS`` when the example servers run at ``base_url``."""
    return {p.name: p.base_url(base_url) for p in PARTICIPANTS}
