"""The built-in listeners, configured from settings."""

from __future__ import annotations

from typing import Any

from listeners.framework import Listener
from listeners.orders.listener import OrderStatusListener
from listeners.settings import ListenerSettings

__all__ = ["default_listeners"]


def default_listeners(settings: ListenerSettings) -> list[Listener[Any]]:
    """The listeners a worker runs unless told otherwise: the order-status listener."""
    return [
        OrderStatusListener(
            saga_types=settings.order_saga_types,
            status_by_step=settings.order_status_by_step,
        )
    ]
