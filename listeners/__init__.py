"""Listeners: business state (what an order, a trip *is*) written from lifecycle events.

Declare a listener as a SQLAlchemy model inheriting :class:`SagaRow` plus small handlers
per lifecycle event on a :class:`Listener`; the framework subscribes, batches (one SQL
transaction per batch and database), loads and upserts in bulk, applies an event only
when its ``seq`` is newer than the one stored for its saga, dead-letters what it cannot
use, retries in place while the database is down, migrates each listener with its own
Alembic history, serves queries (CLI and HTTP) and replays into a fresh database.

Build a worker with :func:`create_app`; run ``python -m listeners --help`` for the CLI.
"""

from __future__ import annotations

from listeners.app import ListenerApp, create_app
from listeners.declarative import Listener
from listeners.errors import (
    EntityNotFoundError,
    InvalidQueryError,
    ListenerConfigError,
    ListenerError,
    OrderNotFoundError,
    ReplayError,
    SchemaNotAtHeadError,
)
from listeners.events import Event, GenericEvent
from listeners.framework import BatchResult, apply_batch
from listeners.orders import OrderStatusListener, OrderView, get_order, list_orders
from listeners.queries import EntityView, SagaView, get_entity, list_entities
from listeners.registry import load_listener
from listeners.replay import ReplayReport, replay
from listeners.rows import NAMING_CONVENTION, SagaRow
from listeners.settings import ListenerSettings

__all__ = [
    "NAMING_CONVENTION",
    "BatchResult",
    "EntityNotFoundError",
    "EntityView",
    "Event",
    "GenericEvent",
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
    "SagaRow",
    "SagaView",
    "SchemaNotAtHeadError",
    "apply_batch",
    "create_app",
    "get_entity",
    "get_order",
    "list_entities",
    "list_orders",
    "load_listener",
    "replay",
]
