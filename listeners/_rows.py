"""The standard part of every listener's tables: "where is it now" and the timeline.

:class:`SagaRow` is a SQLAlchemy mixin: a listener's model inherits it and gets one row
per saga with the columns below, which the framework keeps up to date before the
listener's own handlers run. :func:`timeline_table` builds the table of applied events.

A subclass may rename a column in the database while keeping the attribute, e.g.
``business_key: Mapped[str] = mapped_column("order_id", String(200))``; the framework
always goes through attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

import sqlalchemy as sa
from sqlalchemy import DateTime, Integer, MetaData, String, Text
from sqlalchemy.orm import Mapped, Session, mapped_column

__all__ = [
    "NAMING_CONVENTION",
    "STANDARD_COLUMNS",
    "SagaRow",
    "aware",
    "naive_zone",
    "timeline_table",
    "utc",
    "utc_read",
    "wall_clocks",
]

#: Constraint names Alembic can reproduce; give it to your ``DeclarativeBase`` metadata.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class SagaRow:
    """Mixin: one saga of a business entity, and where it is now.

    Attributes:
        saga_id: The saga (primary key: state is kept per saga).
        business_key: The entity the saga is about (the saga id when it has none).
            Several sagas may share a key; the entity's view is the most recently
            started one (``started_at``, then ``saga_id``).
        saga_type: The saga's type.
        status: The saga's status (running, compensating, completed, compensated,
            cancelled, compensation_failed, parked) unless a handler sets its own.
        current_step: The step (or compensation) it is at; ``None`` once finished.
        current_service: The service that step belongs to.
        last_error: ``"Type: message"`` of the last failure not overcome yet.
        started_at: ``occurred_at`` of its first applied event (``saga_started``).
        updated_at: ``occurred_at`` of its newest applied event.
        last_seq: ``seq`` of its newest applied event (the idempotence guard).
    """

    saga_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    business_key: Mapped[str] = mapped_column(String(200))
    saga_type: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(32))
    current_step: Mapped[str | None] = mapped_column(String(100))
    current_service: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seq: Mapped[int] = mapped_column(Integer)


#: Attribute names of the standard part, in table order.
STANDARD_COLUMNS = (
    "saga_id",
    "business_key",
    "saga_type",
    "status",
    "current_step",
    "current_service",
    "last_error",
    "started_at",
    "updated_at",
    "last_seq",
)


def timeline_table(metadata: MetaData, name: str, *, key_column: str = "business_key") -> sa.Table:
    """The timeline table ``name`` in ``metadata`` (created there once, then reused).

    One row per applied event, primary key ``(saga_id, seq)``, indexed by business key.
    """
    existing = metadata.tables.get(name)
    if existing is not None:
        return existing
    table = sa.Table(
        name,
        metadata,
        sa.Column("saga_id", String(200), primary_key=True),
        sa.Column("seq", Integer, primary_key=True, autoincrement=False),
        sa.Column(key_column, String(200), nullable=False),
        sa.Column("type", String(64), nullable=False),
        sa.Column("step", String(100)),
        sa.Column("service", String(100)),
        sa.Column("attempt", Integer),
        sa.Column("error", Text),
        sa.Column("occurred_at", DateTime(timezone=True), nullable=False),
    )
    sa.Index(None, table.c[key_column], table.c.seq)
    return table


def utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime (naive values, as SQLite returns them, are UTC)."""
    if moment.tzinfo is UTC:
        return moment
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def aware(moment: datetime) -> datetime:
    """``moment`` with a time zone (naive values are UTC), its own kept when it has one.

    Cheaper than :func:`utc` for a value a driver converts anyway (psycopg sends an
    aware datetime as the instant it is; the SQLite path converts to UTC itself).
    """
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def naive_zone(session: Session) -> tzinfo:
    """The zone of the wall clocks ``session`` reads: its PostgreSQL TimeZone, or UTC.

    PostgreSQL returns a column without time zone (a plain ``DateTime()``) as a naive
    wall clock of the session's TimeZone; made aware in it, the value is the instant it
    stands for, and written back the server turns it into the same wall clock (taken as
    UTC on a server whose TimeZone is not UTC, it moved by the offset at every batch).
    SQLite stores every datetime as UTC.
    """
    if session.get_bind().dialect.name != "postgresql":
        return UTC
    info = getattr(session.connection().connection.driver_connection, "info", None)
    zone = getattr(info, "timezone", None)
    return zone if isinstance(zone, tzinfo) else UTC


def wall_clocks(columns: Mapping[str, sa.Column[Any]]) -> frozenset[str]:
    """Attributes of ``columns`` whose naive datetimes are wall clocks of :func:`naive_zone`.

    Every column but a TypeDecorator's: a naive datetime the driver returns comes from a
    column without time zone, whatever the model declares. A TypeDecorator's naive value
    is what the type made of it, taken as UTC (as everywhere in the listener).
    """
    return frozenset(
        attr for attr, col in columns.items() if not isinstance(col.type, sa.TypeDecorator)
    )


def utc_read(values: Mapping[Any, Any], clocks: frozenset[str], zone: tzinfo) -> dict[str, Any]:
    """A row read from the database, its datetimes aware UTC.

    A naive datetime is a wall clock of ``zone`` in an attribute of ``clocks``
    (:func:`wall_clocks`), UTC elsewhere.
    """
    return {
        k: v
        if not isinstance(v, datetime)
        else utc(v if v.tzinfo is not None else v.replace(tzinfo=zone if k in clocks else UTC))
        for k, v in values.items()
    }
