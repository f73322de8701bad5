"""Listeners: business state (what an order *is*) written from saga lifecycle events.

Each listener runs in its own Faust worker (own app id and consumer group), consumes
the lifecycle topic in batches, applies each batch in one SQL transaction to its own
database, and acks the batch only after the commit. Events are applied only when their
``seq`` is newer than the one stored for the saga, so duplicates, replays and restarts
never move state backwards. A database outage stalls the worker; it loses nothing.

Build a worker with :func:`create_app`; write your own listener by subclassing
:class:`Listener`; run ``python -m listeners --help`` for the CLI.
"""

from __future__ import annotations

from listeners.app import ListenerApp, create_app
from listeners.errors import (
    InvalidQueryError,
    ListenerConfigError,
    ListenerError,
    OrderNotFoundError,
    ReplayError,
    SchemaNotAtHeadError,
)
from listeners.framework import BatchResult, Listener, apply_batch
from listeners.orders import OrderStatusListener, OrderView, get_order, list_orders
from listeners.replay import ReplayReport, replay
from listeners.settings import ListenerSettings

__all__ = [
    "BatchResult",
    "InvalidQueryError",
    "Listener",
    "ListenerApp",
    "ListenerConfigError",
    "ListenerError",
    "ListenerSettings",
    "OrderNotFoundError",
    "OrderStatusListener",
    "OrderView",
    "ReplayError",
    "ReplayReport",
    "SchemaNotAtHeadError",
    "apply_batch",
    "create_app",
    "get_order",
    "list_orders",
    "replay",
]
