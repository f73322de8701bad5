"""SQLAlchemy models of the order-status database (the Alembic migrations mirror them)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "Order", "OrderEvent", "metadata"]

_NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of the order-status database only."""

    metadata = MetaData(naming_convention=_NAMING)


class Order(Base):
    """One order: its status now and where it is.

    ``order_id`` is the saga's business key (the saga id when it has none). Timestamps
    are the ``occurred_at`` of events, never the listener's clock, so a replay writes
    the same rows.
    """

    __tablename__ = "orders"

    order_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    saga_id: Mapped[str] = mapped_column(String(200), unique=True)
    saga_type: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(32))
    current_service: Mapped[str | None] = mapped_column(String(100))
    current_step: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seq: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        Index(None, "status", "updated_at"),
        Index(None, "updated_at"),
    )


class OrderEvent(Base):
    """One applied lifecycle event: the order's timeline."""

    __tablename__ = "order_events"

    saga_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    order_id: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(64))
    step: Mapped[str | None] = mapped_column(String(100))
    service: Mapped[str | None] = mapped_column(String(100))
    attempt: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index(None, "order_id", "seq"),)


metadata = Base.metadata
