"""Columns of a user's own types are written as the ORM writes them, on the array path too.

A type SQLAlchemy processes before the driver (its ``bind_processor``, a TypeDecorator's
``process_bind_param``, a ``bind_expression`` wrapping the value in SQL) gets that
processing on PostgreSQL's one-statement array path as well: the rows the listener
writes equal the rows ``session.add`` writes and the rows the row-by-row statement writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Boolean, MetaData, String
from sqlalchemy.dialects.postgresql import CITEXT
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

from listeners import NAMING_CONVENTION, Listener, SagaRow, create_db_engine
from listeners._events import Event
from listeners._framework import apply_batch
from tests.integration.test_listener_bulk_values import _event
from tests.sqlcount import count_sql

pytestmark = pytest.mark.integration


class _Inverted(Boolean):
    """Stores the opposite (a Boolean subclass keeps its own bind_processor on psycopg)."""

    cache_ok = True

    def bind_processor(self, dialect: Any) -> Any:
        return lambda value: None if value is None else not value


class _Trimmed(CITEXT):
    """Case-insensitive text stored without surrounding blanks."""

    cache_ok = True

    def bind_processor(self, dialect: Any) -> Any:
        return lambda value: None if value is None else value.strip()


class _Lowered(CITEXT):
    """Lower-cased by the database: a bind_expression, SQL around the bound value."""

    cache_ok = True

    def bind_expression(self, bindvalue: Any) -> Any:
        return sa.func.lower(bindvalue, type_=self)


class _Upper(String):
    """A String subclass's bind_processor: on psycopg SQLAlchemy swaps in its own string
    type (the dialect's implementation), so the ORM does not call it; nor may the listener."""

    cache_ok = True

    def bind_processor(self, dialect: Any) -> Any:
        return lambda value: None if value is None else value.upper()


class _Suffixed(TypeDecorator[str]):
    impl = String(20)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else value + "!"


class _Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class _Account(SagaRow, _Base):
    __tablename__ = "accounts"
    closed: Mapped[bool | None] = mapped_column(_Inverted)
    handle: Mapped[str | None] = mapped_column(_Trimmed)
    email: Mapped[str | None] = mapped_column(_Lowered)
    shout: Mapped[str | None] = mapped_column(_Upper(20))


class _Noted(SagaRow, _Base):
    __tablename__ = "noted"
    closed: Mapped[bool | None] = mapped_column(_Inverted)
    note: Mapped[str | None] = mapped_column(_Suffixed)


class _Flags(SagaRow, _Base):
    __tablename__ = "flags"
    closed: Mapped[bool | None] = mapped_column(_Inverted)
    handle: Mapped[str | None] = mapped_column(_Trimmed)


# Listeners' timeline tables join the metadata when the first listener is made.
_TIMELINES = [
    Listener(m.__tablename__, model=m, saga_types={"booking"}) for m in (_Account, _Noted, _Flags)
]

_VALUES: dict[str, dict[str, Any]] = {
    "closed": {"s0": True, "s1": False, "s2": None},
    "handle": {"s0": "  Ann ", "s1": "bob", "s2": None},
    "email": {"s0": "Ann@Example.COM", "s1": "bob@x.org", "s2": None},
    "shout": {"s0": "hey", "s1": "Ho", "s2": None},
    "note": {"s0": "paid", "s1": "", "s2": None},
}
_EVENTS = [_event(saga) for saga in ("s0", "s1", "s2")]


@pytest.fixture
def engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = create_db_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS citext"))
    _Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def _listener(model: type[Any]) -> Listener[Any]:
    listener: Listener[Any] = Listener(model.__tablename__, model=model, saga_types={"booking"})

    @listener.on_any
    def fill(row: Any, event: Event) -> None:
        for attr, by_saga in _VALUES.items():
            if hasattr(model, attr):
                setattr(row, attr, by_saga[event.saga_id])

    return listener


def _stored(engine: sa.Engine, table: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(sa.text(f"select t::text from {table} t order by saga_id")))


def _by_listener(engine: sa.Engine, listener: Listener[Any]) -> tuple[list[str], int]:
    with count_sql(engine) as sql, Session(engine) as session, session.begin():
        apply_batch(session, listener, _EVENTS)
    return _stored(engine, listener.table.name), sql.rows


def _by_orm(engine: sa.Engine, listener: Listener[Any]) -> list[str]:
    """The same rows, made by the listener's handlers and written with ``session.add``."""
    rows = [listener.apply(None, event) for event in _EVENTS]
    with Session(engine) as session, session.begin():
        session.execute(sa.delete(listener.table))
        session.add_all(
            listener.model(**{attr: getattr(row, attr) for attr in listener.attributes})
            for row in rows
        )
    return _stored(engine, listener.table.name)


def _row_by_row(engine: sa.Engine, listener: Listener[Any]) -> list[str]:
    with Session(engine) as session, session.begin():
        session.execute(sa.delete(listener.table))
        session.execute(sa.delete(listener.timeline))
    listener._row_sql.arrays = False  # the executemany statement the arrays replace
    stored, _ = _by_listener(engine, listener)
    return stored


@pytest.mark.parametrize("model", [_Account, _Noted])
def test_user_types_are_written_as_the_orm_and_the_row_by_row_statement_write_them(
    engine: sa.Engine, model: type[Any]
) -> None:
    listener = _listener(model)
    arrays, _ = _by_listener(engine, listener)
    assert arrays == _by_orm(engine, listener) == _row_by_row(engine, _listener(model))


def test_processed_values_are_the_ones_stored(engine: sa.Engine) -> None:
    _by_listener(engine, _listener(_Account))
    with engine.connect() as conn:
        got = conn.execute(
            sa.text("select saga_id, closed, handle, email, shout from accounts order by saga_id")
        ).all()
    assert [tuple(row) for row in got] == [
        ("s0", False, "Ann", "ann@example.com", "hey"),
        ("s1", True, "bob", "bob@x.org", "Ho"),
        ("s2", None, None, None, None),
    ]


def test_a_bind_processor_keeps_the_one_statement_array_path(engine: sa.Engine) -> None:
    """Processing a value in Python does not cost the batch its single statement."""
    _, rows = _by_listener(engine, _listener(_Flags))
    assert rows == 3  # the SELECT, the upsert, the timeline insert
    with engine.connect() as conn:
        got = conn.execute(sa.text("select closed, handle from flags order by saga_id")).all()
    assert [tuple(row) for row in got] == [(False, "Ann"), (True, "bob"), (None, None)]
