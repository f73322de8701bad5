"""On SQLite an aware datetime goes to UTC only where the column stores a datetime.

SQLite keeps a datetime's wall clock and drops its zone, and the listener reads stored
datetimes back as UTC: a DateTime column gets the UTC value. Any other column gets the
value as given, as ``session.add`` writes it: a Date column the value's own date (a time
at 01:00+02:00 on Jan 2 is Jan 2, not Jan 1), a String column its text.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Date, DateTime, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from listeners import NAMING_CONVENTION, Listener, SagaRow, create_db_engine
from listeners._events import Event, validate_any_event
from listeners._framework import apply_batch

LOCAL = datetime(2026, 1, 2, 1, 0, tzinfo=timezone(timedelta(hours=2)))  # Jan 1, 23:00 UTC


class _Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class _Visit(SagaRow, _Base):
    __tablename__ = "visits"
    day: Mapped[date | None] = mapped_column(Date)
    label: Mapped[str | None] = mapped_column(String(40))
    noted_at: Mapped[datetime | None] = mapped_column(DateTime())


_visits = Listener("visits", model=_Visit, saga_types={"visit"}, migrations=".")


@_visits.on_start
def _noted(visit: _Visit, event: Event) -> None:
    visit.day = LOCAL  # type: ignore[assignment]  # a datetime, as handlers often pass
    visit.label = LOCAL  # type: ignore[assignment]
    visit.noted_at = LOCAL


_EVENT = validate_any_event(
    {
        "event_id": "v1:1",
        "saga_id": "v1",
        "saga_type": "visit",
        "saga_version": 1,
        "seq": 1,
        "type": "saga_started",
        "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
)


@pytest.fixture
def engine() -> Iterator[sa.Engine]:
    engine = create_db_engine("sqlite://")
    _Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def _stored(engine: sa.Engine) -> tuple[Any, ...]:
    with engine.connect() as conn:
        row = conn.execute(sa.text("select day, label, noted_at from visits")).one()
    return tuple(row)


def test_only_datetime_columns_get_utc(engine: sa.Engine) -> None:
    with Session(engine) as session, session.begin():
        apply_batch(session, _visits, [_EVENT])
    by_listener = _stored(engine)
    with Session(engine) as session, session.begin():
        session.execute(sa.delete(_Visit.__table__))  # type: ignore[arg-type]
        row = _visits.apply(None, _EVENT)  # the same handlers, written by the ORM
        session.add(_Visit(**{attr: getattr(row, attr) for attr in _visits.attributes}))
    by_orm = _stored(engine)
    assert by_listener[:2] == by_orm[:2] == ("2026-01-02", str(LOCAL))
    assert by_orm[2] == "2026-01-02 01:00:00.000000"  # the ORM keeps the wall clock
    assert by_listener[2] == "2026-01-01 23:00:00.000000"  # UTC, as the listener reads it


def test_a_datetime_column_reads_back_as_the_same_instant(engine: sa.Engine) -> None:
    with Session(engine) as session, session.begin():
        apply_batch(session, _visits, [_EVENT])
    with Session(engine) as session:
        visit = _visits.load(session, ["v1"])["v1"]
    assert visit.noted_at == LOCAL
    assert visit.day == date(2026, 1, 2)
