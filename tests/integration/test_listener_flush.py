"""A listener writes its own columns' defaults and ``onupdate`` values as the ORM does.

A column left unset (or ``None``) on a new saga gets its ``default=`` or its
``server_default`` (``session.add`` leaves it out of the INSERT; the listener wrote
NULL), and a stored saga's column keeps its stored value unless a handler changed it;
a stored saga's column that no handler changed gets its ``onupdate=`` (it never ran).
Compared with ``session.add`` and an ORM flush (one per batch) of the same handlers'
rows, batch by batch, on PostgreSQL (arrays, and the row-by-row fallback) and SQLite.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import DateTime, Integer, MetaData, String, func, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from listeners import NAMING_CONVENTION, Listener, SagaRow, create_db_engine
from tests.integration import orm_reference
from tests.integration.test_listener_bulk_values import _event

pytestmark = pytest.mark.integration


def _touched() -> str:
    return "touched"


class _Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class _Ticket(SagaRow, _Base):
    """Server defaults (and a Python one)."""

    __tablename__ = "tickets"
    stage: Mapped[str | None] = mapped_column(String(20), server_default=text("'new'"))
    label: Mapped[str | None] = mapped_column(String(20), server_default="plain")
    opened_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    # NOT NULL with only a server default: every batch failed while it was written as NULL
    priority: Mapped[int] = mapped_column(Integer, server_default=text("3"))
    kind: Mapped[str | None] = mapped_column(String(20), default="std")


class _Stamp(SagaRow, _Base):
    """``onupdate``: a function, a value, a SQL expression."""

    __tablename__ = "stamps"
    note: Mapped[str | None] = mapped_column(String(40))
    touched: Mapped[str | None] = mapped_column(String(20), onupdate=_touched)
    revised: Mapped[str | None] = mapped_column(String(20), default="first", onupdate="again")
    edited_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), onupdate=func.now())


class _PgBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class _Coded(SagaRow, _PgBase):
    """SQL defaults of another type than the column's (PostgreSQL assigns a default to its
    column with a cast: a uuid into a varchar), and defaults holding a ``%``."""

    __tablename__ = "coded"
    public_id: Mapped[str | None] = mapped_column(
        String(36), server_default=text("gen_random_uuid()")
    )
    revision: Mapped[str | None] = mapped_column(String(36), onupdate=func.gen_random_uuid())
    rate: Mapped[str | None] = mapped_column(String(20), server_default="100%")
    fmt: Mapped[str | None] = mapped_column(String(20), server_default=text("'a%b'"))


_LISTENERS = [  # their timeline tables
    Listener(m.__tablename__, model=m, saga_types={"booking"}) for m in (_Ticket, _Stamp, _Coded)
]
_INSTANTS = ("opened_at", "edited_at", "started_at", "updated_at")

_BATCHES = [
    [_event("s0"), _event("s1"), _event("s2"), _event("s3"), _event("s3", 2, "step_started")],
    [_event(s, 2, "step_started", step="pay") for s in ("s0", "s1", "s2")] + [_event("s4")],
    [_event("s1", 3, "step_succeeded", step="pay")],
]
# What the handlers set, per (saga, seq); anything else they leave alone. s0 and s4 (new in
# a batch of stored sagas): nothing. s3: two events in its first batch, one INSERT.
_TICKET_SETS: dict[tuple[str, int], dict[str, Any]] = {
    ("s1", 1): {"stage": "vip", "kind": None},  # kind None: its default, as session.add
    ("s2", 1): {"stage": None, "label": "gold"},  # None: the server default, as session.add
    ("s3", 2): {"kind": None, "priority": 7},
    ("s1", 2): {"stage": None},  # NULL on update: stored as NULL...
    ("s2", 2): {"label": "gold"},  # the stored value again: unchanged
    ("s1", 3): {},  # ...and stays NULL (the server default is for inserts only)
}
_STAMP_SETS: dict[tuple[str, int], dict[str, Any]] = {
    ("s1", 1): {"note": "hi"},
    ("s3", 2): {"note": "two"},  # still one INSERT: no onupdate
    ("s1", 2): {"touched": "by hand", "revised": "first"},  # "first" is stored: unchanged
    ("s2", 2): {"note": "n"},
}


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    yield from orm_reference.engines(request, tmp_path, _Base.metadata)


def _columns(
    engine: sa.Engine,
    model: type[Any],
    sets: Mapping[tuple[str, int], Mapping[str, Any]],
    arrays: bool,
) -> list[list[dict[str, Any]]]:
    """The listener's table after each batch, checked equal to the ORM's, as dicts."""
    listener = orm_reference.setting(model, sets)
    listener._row_sql.arrays = arrays  # False: PostgreSQL's executemany (SQLite's always)
    run = orm_reference.by_listener(engine, listener, _BATCHES, _INSTANTS)
    reference = orm_reference.by_orm(
        engine, orm_reference.setting(model, sets), _BATCHES, _INSTANTS
    )
    assert run.after == reference
    keys = [col.key for col in model.__table__.columns]
    return [[dict(zip(keys, row, strict=True)) for row in table] for table in run.after]


@pytest.mark.parametrize("arrays", [True, False], ids=["arrays", "row-by-row"])
def test_server_defaults_are_written_as_the_orm_writes_them(
    engine: sa.Engine, arrays: bool
) -> None:
    first, _, third = _columns(engine, _Ticket, _TICKET_SETS, arrays)
    pick = ("saga_id", "stage", "label", "priority", "kind", "opened_at")
    assert [tuple(r[k] for k in pick) for r in first] == [
        ("s0", "new", "plain", "3", "std", False),  # opened_at: is it NULL?
        ("s1", "vip", "plain", "3", "std", False),
        ("s2", "new", "gold", "3", "std", False),
        ("s3", "new", "plain", "7", "std", False),
    ]
    assert [tuple(r[k] for k in pick) for r in third] == [
        ("s0", "new", "plain", "3", "std", False),
        ("s1", None, "plain", "3", "std", False),
        ("s2", "new", "gold", "3", "std", False),
        ("s3", "new", "plain", "7", "std", False),
        ("s4", "new", "plain", "3", "std", False),
    ]


@pytest.mark.parametrize("arrays", [True, False], ids=["arrays", "row-by-row"])
def test_onupdate_runs_as_in_an_orm_flush(engine: sa.Engine, arrays: bool) -> None:
    first, second, third = _columns(engine, _Stamp, _STAMP_SETS, arrays)
    pick = ("saga_id", "note", "touched", "revised", "edited_at")
    assert [tuple(r[k] for k in pick) for r in first] == [
        ("s0", None, None, "first", True),  # edited_at: is it NULL?
        ("s1", "hi", None, "first", True),
        ("s2", None, None, "first", True),
        ("s3", "two", None, "first", True),
    ]
    assert [tuple(r[k] for k in pick) for r in second] == [
        ("s0", None, "touched", "again", False),
        ("s1", "hi", "by hand", "again", False),
        ("s2", "n", "touched", "again", False),
        ("s3", "two", None, "first", True),
        ("s4", None, None, "first", True),
    ]
    assert [tuple(r[k] for k in pick) for r in third][1] == ("s1", "hi", "touched", "again", False)


def test_server_clock_values_are_the_batch_transactions_time(pg_url: str) -> None:
    """``now()`` on PostgreSQL: the instant of the transaction that inserted (updated)."""
    engine = create_db_engine(pg_url)
    _Base.metadata.create_all(engine)
    opened = orm_reference.by_listener(engine, orm_reference.setting(_Ticket, {}), _BATCHES)
    edited = orm_reference.by_listener(engine, orm_reference.setting(_Stamp, {}), _BATCHES)
    with engine.connect() as conn:
        got = conn.execute(
            sa.select(_Ticket.saga_id, _Ticket.opened_at, _Stamp.edited_at)
            .join(_Stamp, _Stamp.saga_id == _Ticket.saga_id)
            .order_by(_Ticket.saga_id)
        ).all()
    engine.dispose()
    assert opened.now[1] != opened.now[0]
    assert [tuple(row) for row in got] == [
        ("s0", opened.now[0], edited.now[1]),
        ("s1", opened.now[0], edited.now[2]),  # onupdate=func.now(): at each update
        ("s2", opened.now[0], edited.now[1]),
        ("s3", opened.now[0], None),
        ("s4", opened.now[1], None),
    ]


@pytest.mark.parametrize("arrays", [True, False], ids=["arrays", "row-by-row"])
def test_sql_defaults_of_another_type_and_with_a_percent_are_written(
    pg_url: str, arrays: bool
) -> None:
    """A CASE has one type from implicit casts only: the default gets the column's values'
    type (was: ``CASE types character varying and uuid cannot be matched``, every event
    a dead letter); a ``%`` is not doubled (was: ``100%%``)."""
    engine = create_db_engine(pg_url)
    _PgBase.metadata.create_all(engine)
    sets = {("s1", 1): {"public_id": "mine", "rate": "5%"}, ("s2", 2): {"revision": "by hand"}}
    listener = orm_reference.setting(_Coded, sets)
    listener._row_sql.arrays = arrays
    instants = ("public_id", "revision", "started_at", "updated_at")
    run = orm_reference.by_listener(engine, listener, _BATCHES, instants)
    reference = orm_reference.by_orm(
        engine, orm_reference.setting(_Coded, sets), _BATCHES, instants
    )
    assert run.after == reference
    with engine.begin() as conn:  # again, to see the values
        conn.execute(sa.delete(_Coded.__table__))
    final = {
        row[4]: row[:4] for row in orm_reference.by_listener(engine, listener, _BATCHES).after[-1]
    }
    engine.dispose()
    uuid = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    shown = {
        key: tuple("<uuid>" if v and re.fullmatch(uuid, v) else v for v in row)
        for key, row in final.items()
    }
    assert shown == {
        "s0": ("<uuid>", "<uuid>", "100%", "a%b"),
        "s1": ("mine", "<uuid>", "5%", "a%b"),
        "s2": ("<uuid>", "by hand", "100%", "a%b"),
        "s3": ("<uuid>", None, "100%", "a%b"),
        "s4": ("<uuid>", None, "100%", "a%b"),
    }
