"""SQLAlchemy models of the order-status database (its migrations mirror them).

State is kept per saga: ``orders`` has one row per order saga (primary key ``saga_id``);
several sagas may share an ``order_id`` (an order retried as a new saga). The order's
view is its most recently started saga; the others stay in its history.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, synonym

from listeners._rows import NAMING_CONVENTION, SagaRow, timeline_table

__all__ = ["Base", "Order", "OrderEvent", "metadata"]


class Base(DeclarativeBase):
    """Declarative base of the order-status database only."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Order(SagaRow, Base):
    """One order saga: the order's status and where it is.

    Only the standard columns of :class:`~listeners._rows.SagaRow`, two of them under
    the names the order schema always had: ``order_id`` (the business key, the saga id
    when it has none) and ``created_at``. Timestamps are the ``occurred_at`` of events,
    never the listener's clock, so a replay writes the same rows.
    """

    __tablename__ = "orders"

    business_key: Mapped[str] = mapped_column("order_id", String(200))
    started_at: Mapped[datetime] = mapped_column("created_at", DateTime(timezone=True))
    order_id = synonym("business_key")
    created_at = synonym("started_at")


class OrderEvent(Base):
    """One applied lifecycle event: an order saga's timeline."""

    __table__ = timeline_table(Base.metadata, "order_events", key_column="order_id")


metadata = Base.metadata
