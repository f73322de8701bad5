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

from listeners._app import ListenerApp, create_app
from listeners._db import create_db_engine, session_factory
from listeners._declarative import Listener
from listeners._errors import (
    EntityNotFoundError,
    InvalidQueryError,
    ListenerConfigError,
    ListenerError,
    OrderNotFoundError,
    ReplayError,
    SchemaNotAtHeadError,
)
from listeners._events import Event, GenericEvent
from listeners._framework import BatchResult, apply_batch
from listeners._queries import EntityView, SagaView, get_entity, list_entities
from listeners._registry import load_listener
from listeners._replay import ReplayReport, replay
from listeners._rows import NAMING_CONVENTION, SagaRow
from listeners._settings import ListenerSettings
from listeners.orders import OrderStatusListener, OrderView, get_order, list_orders

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
    "create_db_engine",
    "get_entity",
    "get_order",
    "list_entities",
    "list_orders",
    "load_listener",
    "replay",
    "session_factory",
]
