"""A listener writes its own columns' defaults and ``onupdate`` values as the ORM does.

A column left unset on a new saga gets its ``default=`` or its ``server_default``
(``session.add`` leaves it out of the INSERT; the listener used to write NULL), a stored
saga's column that no handler changed gets its ``onupdate=`` (never ran before) or keeps
its stored value: compared with ``session.add`` and an ORM flush of the same handlers'
rows, batch by batch, on PostgreSQL and SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import DateTime, MetaData, String, func, text
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
    __tablename__ = "tickets"
    stage: Mapped[str | None] = mapped_column(String(20), server_default=text("'new'"))
    label: Mapped[str | None] = mapped_column(String(20), server_default="plain")
    opened_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    kind: Mapped[str | None] = mapped_column(String(20), default="std")
    note: Mapped[str | None] = mapped_column(String(40))
    touched: Mapped[str | None] = mapped_column(String(20), onupdate=_touched)
    revised: Mapped[str | None] = mapped_column(String(20), default="first", onupdate="again")
    edited_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), onupdate=func.now())


_LISTENER = Listener("tickets", model=_Ticket, saga_types={"booking"})  # its timeline table
_INSTANTS = ("opened_at", "edited_at", "started_at", "updated_at")

# What the handlers set, per (saga, seq); anything else they leave alone.
_SETS: dict[tuple[str, int], dict[str, Any]] = {
    ("s0", 1): {},  # nothing: every default
    ("s1", 1): {"stage": "vip", "kind": None, "note": "hi"},  # kind None: its default
    ("s2", 1): {"stage": None, "label": "gold"},  # None: the server default, as session.add
    ("s0", 2): {},  # nothing changed: onupdate runs, stored values stay
    ("s1", 2): {"stage": None, "touched": "by hand", "revised": "first"},  # "first": unchanged
    ("s2", 2): {"note": "n"},
    ("s1", 3): {},  # its NULL stage stays NULL (the server default is for inserts only)
}
_BATCHES = [
    [_event("s0"), _event("s1"), _event("s2")],
    [_event(s, 2, "step_started", step="pay") for s in ("s0", "s1", "s2")],
    [_event("s1", 3, "step_succeeded", step="pay")],
]


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    yield from orm_reference.engines(request, tmp_path, _Base.metadata)


def _listener() -> Listener[Any]:
    return orm_reference.setting(_Ticket, _SETS)


def test_defaults_and_onupdate_are_written_as_the_orm_writes_them(engine: sa.Engine) -> None:
    run = orm_reference.by_listener(engine, _listener(), _BATCHES, _INSTANTS)
    assert run.after == orm_reference.by_orm(engine, _listener(), _BATCHES, _INSTANTS)
    # and what that is, after the first batch and after the last
    columns = [col.key for col in _Ticket.__table__.columns]
    first, *_, last = ([dict(zip(columns, row, strict=True)) for row in t] for t in run.after)
    assert [(r["stage"], r["label"], r["kind"]) for r in first] == [
        ("new", "plain", "std"),
        ("vip", "plain", "std"),
        ("new", "gold", "std"),
    ]
    assert [(r["stage"], r["touched"], r["revised"], r["note"]) for r in last] == [
        ("new", "touched", "again", None),
        (None, "touched", "again", "hi"),  # NULL stays NULL; "by hand" was batch 2's
        ("new", "touched", "again", "n"),
    ]


def test_server_clock_defaults_are_the_batch_transactions_time(pg_url: str) -> None:
    """``now()`` on PostgreSQL: the instant of the transaction that inserted (updated)."""
    engine = create_db_engine(pg_url)
    _Base.metadata.create_all(engine)
    run = orm_reference.by_listener(engine, _listener(), _BATCHES)
    with engine.connect() as conn:
        got = conn.execute(
            sa.select(_Ticket.saga_id, _Ticket.opened_at, _Ticket.edited_at).order_by("saga_id")
        ).all()
    first, second, third = run.now
    assert [tuple(row) for row in got] == [
        ("s0", first, second),
        ("s1", first, third),  # onupdate=func.now(): at each update no handler set it in
        ("s2", first, second),
    ]
    engine.dispose()
