"""The PostgreSQL array statements take every value the row-by-row statements took, and
refuse every value they refused: an over-long string fails the batch (it is not cut),
and values of mixed Python types in one column are written as they were."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Boolean, Date, DateTime, Float, Integer, MetaData, Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

from listeners import NAMING_CONVENTION, Listener, SagaRow, create_db_engine
from listeners._db import is_transient
from listeners._events import Event, validate_any_event
from listeners._framework import apply_batch
from listeners._queries import get_entity, list_entities
from tests.sqlcount import count_sql

pytestmark = pytest.mark.integration

T = datetime(2026, 1, 1, 12, tzinfo=UTC)


class _Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class _Booking(SagaRow, _Base):
    __tablename__ = "bookings"
    flight: Mapped[str | None] = mapped_column(String(10))
    amount: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    seats: Mapped[int | None] = mapped_column(Integer)
    paid: Mapped[bool | None] = mapped_column(Boolean)
    noted_at: Mapped[datetime | None] = mapped_column(DateTime())
    day: Mapped[date | None] = mapped_column(Date)


class _NaiveUtc(TypeDecorator[datetime]):
    """Stores UTC in a column without time zone and returns it naive, as it stored it."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value if value is None else value.astimezone(UTC).replace(tzinfo=None)


class _Stamped(SagaRow, _Base):
    __tablename__ = "stamped"
    stamped_at: Mapped[datetime | None] = mapped_column(_NaiveUtc)
    # Declared with a time zone; the table made by the test below has none (a migration
    # that does not match the model).
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class _Priced(SagaRow, _Base):
    __tablename__ = "priced"
    price: Mapped[float | None] = mapped_column(Float)


# Listeners' timeline tables join the metadata when the first listener is made.
_TIMELINES = [
    Listener(m.__tablename__, model=m, saga_types={"booking"})
    for m in (_Booking, _Priced, _Stamped)
]


def _event(saga_id: str, seq: int = 1, kind: str = "saga_started", **fields: Any) -> Event:
    return validate_any_event(
        {
            "event_id": f"{saga_id}:{seq}",
            "saga_id": saga_id,
            "saga_type": "booking",
            "saga_version": 1,
            "seq": seq,
            "type": kind,
            "occurred_at": T,
            **fields,
        }
    )


@pytest.fixture
def engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = create_db_engine(pg_url)
    _Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def _listener(model: type[Any], handler: Callable[[Any, Event], None] | None = None) -> Any:
    listener: Listener[Any] = Listener(model.__tablename__, model=model, saga_types={"booking"})
    if handler is not None:
        listener.on_any(handler)
    return listener


def _apply(engine: sa.Engine, listener: Any, events: list[Event]) -> None:
    with Session(engine) as session, session.begin():
        apply_batch(session, listener, events)


def _column(engine: sa.Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql)).scalars())


def test_a_saga_id_over_its_length_fails_the_batch_instead_of_being_cut(
    engine: sa.Engine,
) -> None:
    with pytest.raises(sa.exc.DataError, match="too long"):
        _apply(engine, _listener(_Booking), [_event("x" * 200 + "-A")])
    assert _column(engine, "select saga_id from bookings") == []


def test_the_lookup_does_not_cut_the_ids_it_looks_for(engine: sa.Engine) -> None:
    _apply(engine, _listener(_Booking), [_event("x" * 200)])
    with Session(engine) as session:
        assert _listener(_Booking).load(session, ["x" * 200 + "-B"]) == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("business_key", "k" * 201),  # a standard column
        ("step", "s" * 101),  # a timeline column
    ],
)
def test_an_event_value_over_its_column_length_fails_the_batch(
    engine: sa.Engine, field: str, value: str
) -> None:
    with pytest.raises(sa.exc.DataError, match="too long"):
        _apply(engine, _listener(_Booking), [_event("s1", **{field: value})])


def test_a_handler_value_over_its_column_length_fails_the_batch(engine: sa.Engine) -> None:
    def book(row: _Booking, event: Event) -> None:
        row.flight = "LONGFLIGHT-12345"

    with pytest.raises(sa.exc.DataError, match="too long"):
        _apply(engine, _listener(_Booking, book), [_event("s1")])
    assert _column(engine, "select flight from bookings") == []


NAIVE = datetime(2026, 1, 1, 12)


def _assert_kept_over_batches(engine: sa.Engine, listener: Any, sql: str, kept: Any) -> None:
    """Three batches of one saga (the first sets the value): ``sql`` reads ``kept`` after each."""
    for seq, kind in enumerate(["saga_started", "step_started", "step_succeeded"], start=1):
        _apply(engine, listener, [_event("s1", seq, kind, step="pay", service="payments")])
        assert _column(engine, sql) == [kept]


@pytest.mark.parametrize(
    ("column", "values", "stored"),
    [
        ("flight", [5, "AB12"], ["5", "AB12"]),
        ("flight", [["a", "b"], "AB12"], ["{a,b}", "AB12"]),
        ("amount", [10, Decimal("10.5")], ["10.00", "10.50"]),
        ("amount", [Decimal("1.10"), 2.5], ["1.10", "2.50"]),
        ("seats", [True, 3], ["1", "3"]),
        ("paid", [1, 0], ["true", "false"]),
        ("paid", [1, None], ["true", None]),
        ("noted_at", [NAIVE, T], ["2026-01-01 12:00:00", "2026-01-01 12:00:00"]),
        ("day", [T, date(2026, 1, 2)], ["2026-01-01", "2026-01-02"]),
    ],
)
def test_values_of_mixed_python_types_in_one_column_are_written(
    engine: sa.Engine, column: str, values: list[Any], stored: list[Any]
) -> None:
    """What the row-by-row statements stored, one array could not take."""

    def book(row: _Booking, event: Event) -> None:
        setattr(row, column, values[int(event.saga_id[1:])])

    _apply(engine, _listener(_Booking, book), [_event("s0"), _event("s1")])
    got = _column(engine, f"select {column}::text from bookings order by saga_id")
    assert got == stored


def test_a_float_column_goes_in_one_array_statement(engine: sa.Engine) -> None:
    def price(row: _Priced, event: Event) -> None:
        row.price = 1.5 if event.saga_id == "s0" else 2.25

    events = [_event(f"s{i}") for i in range(5)]
    with count_sql(engine) as sql:
        _apply(engine, _listener(_Priced, price), events)
    assert sql.rows == sql.statements == 3  # the SELECT, the upsert, the timeline
    assert _column(engine, "select price from priced order by saga_id") == [1.5] + [2.25] * 4


def test_a_connection_lost_under_the_array_statement_is_an_outage(engine: sa.Engine) -> None:
    """A dead connection fails the array statement before the server sees it, as a dump
    error does; it must surface as the outage it is (retried in place), not be followed
    by the row-by-row statement on the dead transaction (a non-transient error there
    isolated the batch: one commit per event)."""
    listener = _listener(_Priced)
    events = [_event(f"s{i}") for i in range(3)]
    rows = [listener.apply(None, event) for event in events]
    with Session(engine) as session:
        session.connection().connection.dbapi_connection.pgconn.finish()  # type: ignore[union-attr]
        with pytest.raises(sa.exc.DBAPIError) as raised:
            listener.write(session, rows, events)
    assert is_transient(raised.value)


def test_a_value_its_type_refuses_fails_the_batch_as_row_by_row(engine: sa.Engine) -> None:
    """Boolean's bind processor refuses "yes"; on the array path the refusal leaves the
    value to the row-by-row statement, which raises it as SQLAlchemy always did."""

    def book(row: _Booking, event: Event) -> None:
        row.paid = "yes"  # type: ignore[assignment]

    with pytest.raises(sa.exc.StatementError, match="Not a boolean value"):
        _apply(engine, _listener(_Booking, book), [_event("s1")])
    assert _column(engine, "select saga_id from bookings") == []


def test_booleans_given_as_numbers_go_in_one_array_statement(engine: sa.Engine) -> None:
    """Boolean's processor turns 1 / 0 into True / False, as row by row; then one array
    takes them."""

    def book(row: _Booking, event: Event) -> None:
        row.paid = 1 if event.saga_id == "s0" else 0  # type: ignore[assignment]

    with count_sql(engine) as sql:
        _apply(engine, _listener(_Booking, book), [_event("s0"), _event("s1")])
    assert sql.rows == sql.statements == 3
    assert _column(engine, "select paid from bookings order by saga_id") == [True, False]


def test_a_naive_datetime_column_keeps_its_value_over_batches_in_another_time_zone(
    engine: sa.Engine, pg_url: str
) -> None:
    """A ``DateTime()`` column holds a wall clock that PostgreSQL reads in the session's
    TimeZone; a batch that does not touch it writes it back unchanged (it was read as
    UTC and so moved by the server's offset at every batch)."""
    with engine.begin() as conn:
        database = conn.execute(sa.text("select current_database()")).scalar_one()
        conn.execute(sa.text(f"alter database {database} set timezone = 'America/New_York'"))
    engine.dispose()  # new connections take the database's TimeZone

    def note(row: _Booking, event: Event) -> None:
        if event.type == "saga_started":
            row.noted_at = NAIVE

    listener = _listener(_Booking, note)
    _assert_kept_over_batches(engine, listener, "select noted_at from bookings", NAIVE)
    assert _column(engine, "select current_setting('TimeZone')") == ["America/New_York"]


def _set_time_zone(engine: sa.Engine, zone: str) -> None:
    with engine.begin() as conn:
        database = conn.execute(sa.text("select current_database()")).scalar_one()
        conn.execute(sa.text(f"alter database {database} set timezone = '{zone}'"))
    engine.dispose()  # new connections take the database's TimeZone


@pytest.mark.parametrize("zone", ["UTC", "America/New_York"])
def test_a_naive_datetime_column_is_read_back_as_the_instant_it_holds(
    engine: sa.Engine, zone: str
) -> None:
    """A ``DateTime()`` column (no time zone: the default of ``Mapped[datetime]``) set
    from an event holds the session's wall clock of that instant; the next batch reads it
    as that instant, aware like the event's times, so a handler can compare or subtract
    them (a naive value there raised TypeError: the saga's batches failed for good)."""
    _set_time_zone(engine, zone)

    def track(row: _Booking, event: Event) -> None:
        if event.type == "saga_started":
            row.noted_at = event.occurred_at
        else:
            row.seats = int((event.occurred_at - row.noted_at).total_seconds())

    listener = _listener(_Booking, track)
    _apply(engine, listener, [_event("s1")])
    later = T + timedelta(minutes=1)
    _apply(engine, listener, [_event("s1", 2, "step_started", step="pay", occurred_at=later)])
    assert _column(engine, "select seats from bookings") == [60]
    stored = {"UTC": datetime(2026, 1, 1, 12), "America/New_York": datetime(2026, 1, 1, 7)}
    assert _column(engine, "select noted_at from bookings") == [stored[zone]]


def test_a_batch_of_stored_and_new_naive_datetimes_goes_in_one_array_statement(
    engine: sa.Engine,
) -> None:
    """A stored saga's ``DateTime()`` value beside a new saga's (from its event) in one
    batch: one array takes both (a naive one beside an aware one sent the whole table
    row by row: one statement per row)."""

    def note(row: _Booking, event: Event) -> None:
        if event.type == "saga_started":
            row.noted_at = event.occurred_at

    listener = _listener(_Booking, note)
    _apply(engine, listener, [_event("s0")])
    with count_sql(engine) as sql:
        _apply(engine, listener, [_event("s0", 2, "step_started", step="pay"), _event("s1")])
    assert sql.rows == sql.statements == 3
    assert _column(engine, "select noted_at from bookings order by saga_id") == [NAIVE] * 2


def test_the_queries_show_a_naive_datetime_column_as_the_instant_it_holds(
    engine: sa.Engine,
) -> None:
    """``GET`` of a saga whose ``DateTime()`` column holds 07:00, New York's wall clock of
    the event's 12:00 UTC, shows 12:00 UTC (it showed 07:00 UTC)."""
    _set_time_zone(engine, "America/New_York")

    def note(row: _Booking, event: Event) -> None:
        row.noted_at = event.occurred_at

    listener = _listener(_Booking, note)
    _apply(engine, listener, [_event("s1")])
    with Session(engine) as session:
        entity = get_entity(session, listener, "s1")
        listed = list_entities(session, listener)
    assert entity.fields["noted_at"] == T
    assert [view.fields["noted_at"] for view in listed] == [T]
    assert _column(engine, "select noted_at from bookings") == [datetime(2026, 1, 1, 7)]


def test_a_type_decorators_naive_datetime_is_utc_whatever_the_time_zone(
    engine: sa.Engine,
) -> None:
    """A TypeDecorator over ``DateTime()`` that stores and returns naive UTC: its naive
    value is UTC, not a wall clock of the session's TimeZone (read as New York's, it moved
    by five hours at every batch)."""
    _set_time_zone(engine, "America/New_York")

    def stamp(row: _Stamped, event: Event) -> None:
        if event.type == "saga_started":
            row.stamped_at = event.occurred_at

    listener = _listener(_Stamped, stamp)
    _assert_kept_over_batches(engine, listener, "select stamped_at from stamped", NAIVE)
    with Session(engine) as session:
        assert get_entity(session, listener, "s1").fields["stamped_at"] == T


def test_a_column_without_time_zone_declared_with_one_keeps_its_value_over_batches(
    engine: sa.Engine,
) -> None:
    """The model says ``DateTime(timezone=True)``, the table (an older migration) has no
    time zone: PostgreSQL returns a naive wall clock of the session's TimeZone all the
    same, and it stays as it is over batches (read as UTC, it moved by New York's offset
    at every batch)."""
    with engine.begin() as conn:
        conn.execute(sa.text("alter table stamped alter column due_at type timestamp"))
    _set_time_zone(engine, "America/New_York")

    def due(row: _Stamped, event: Event) -> None:
        if event.type == "saga_started":
            row.due_at = event.occurred_at

    listener = _listener(_Stamped, due)
    kept = datetime(2026, 1, 1, 7)
    _assert_kept_over_batches(engine, listener, "select due_at from stamped", kept)
