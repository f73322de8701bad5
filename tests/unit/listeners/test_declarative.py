"""The declarative listener API on the example trips listener (in-memory SQLite)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import JSON, Integer, MetaData
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from coordinator import events as ev
from coordinator.events import DeadLetter
from examples.trips import Trip, trips
from listeners import (
    BatchResult,
    EntityNotFoundError,
    InvalidQueryError,
    Listener,
    SagaRow,
    create_db_engine,
    get_entity,
    list_entities,
    session_factory,
)
from listeners._decoding import RawRecord
from listeners._errors import ListenerConfigError
from listeners._processor import BatchProcessor, Target, commit_batch
from listeners.orders import OrderStatusListener, get_order
from tests.listener_events import order_saga
from tests.sqlcount import count_sql
from tests.trip_events import trip_saga


@pytest.fixture
def trip_sessions() -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine("sqlite://")
    Trip.metadata.create_all(engine)
    yield session_factory(engine)
    engine.dispose()


def _apply(sessions: sessionmaker[Session], events: list[Any]) -> BatchResult:
    return commit_batch(sessions, [trips], events)


def _get(sessions: sessionmaker[Session], key: str) -> Any:
    with sessions() as session:
        return get_entity(session, trips, key)


def test_handlers_and_the_standard_part(trip_sessions: sessionmaker[Session]) -> None:
    events = trip_saga("s1", "trip-1", "completed")
    assert _apply(trip_sessions, events) == BatchResult(applied=len(events))
    trip = _get(trip_sessions, "trip-1")
    assert (trip.status, trip.current_step, trip.current_service) == ("completed", None, None)
    assert trip.fields["destination"] == "Lisbon"
    assert (trip.fields["flight"], trip.fields["hotel"]) == ("R0", "R1")
    assert trip.fields["confirmed_at"] is not None
    assert trip.fields["events_seen"] == len(events)
    assert [e.seq for e in trip.timeline] == list(range(1, len(events) + 1))


def test_times_in_another_zone_are_stored_as_the_same_instant(
    trip_sessions: sessionmaker[Session],
) -> None:
    """SQLite keeps a datetime's wall clock and drops its zone: written as UTC, a time
    given at +02:00 (a handler's own column, the timeline, the standard part) reads back
    as the same instant."""
    start = datetime(2026, 3, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    events = trip_saga("s1", "trip-1", "completed", start=start)
    _apply(trip_sessions, events)
    trip = _get(trip_sessions, "trip-1")
    assert trip.fields["confirmed_at"] == events[-1].occurred_at  # on_complete's column
    assert trip.updated_at == events[-1].occurred_at
    assert [e.occurred_at for e in trip.timeline] == [e.occurred_at for e in events]


def test_where_is_it_now_mid_flight_and_after_a_failure(
    trip_sessions: sessionmaker[Session],
) -> None:
    _apply(trip_sessions, trip_saga("s1", "trip-1", "in_flight"))
    trip = _get(trip_sessions, "trip-1")
    assert (trip.status, trip.current_step, trip.current_service) == (
        "running",
        "book_hotel",
        "hotels",
    )
    _apply(trip_sessions, trip_saga("s2", "trip-2", "hotel_failed"))
    failed = _get(trip_sessions, "trip-2")
    assert failed.status == "compensated"
    assert failed.last_error == "NoRooms: hotel full"
    assert failed.fields["flight"] is None  # on_compensation undid it


def test_unknown_event_types_go_to_timeline_and_any_handler(
    trip_sessions: sessionmaker[Session],
) -> None:
    events = trip_saga("s1", "trip-1", "completed", unknown_type=True)
    assert _apply(trip_sessions, events).applied == len(events)
    trip = _get(trip_sessions, "trip-1")
    assert "trip_note" in [e.type for e in trip.timeline]
    assert trip.fields["events_seen"] == len(events)
    assert trip.status == "completed"


def test_a_business_key_shared_by_two_sagas(trip_sessions: sessionmaker[Session]) -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    first = trip_saga("s-first", "trip-1", "hotel_failed", start=t0)
    second = trip_saga("s-second", "trip-1", "completed", start=t0 + timedelta(minutes=5))
    # The second saga's events first, then the first's (late, and with higher seqs):
    # seq is compared per saga, and the most recently started saga is the trip.
    _apply(trip_sessions, second)
    assert _apply(trip_sessions, first).applied == len(first)
    trip = _get(trip_sessions, "trip-1")
    assert (trip.saga_id, trip.status) == ("s-second", "completed")
    assert [h.saga_id for h in trip.history] == ["s-first"]
    assert trip.history[0].status == "compensated"
    assert len(trip.history[0].timeline) == len(first)
    assert len(trip.timeline) == len(second)
    with trip_sessions() as session:
        listed = list_entities(session, trips, {"status": "compensated"})
        assert listed == []  # the trip is its newest saga, which completed
        assert [t.saga_id for t in list_entities(session, trips, {"business_key": "trip-1"})] == [
            "s-second"
        ]


def test_list_filters(trip_sessions: sessionmaker[Session]) -> None:
    for i, outcome in enumerate(["completed", "hotel_failed", "in_flight", "completed"]):
        _apply(trip_sessions, trip_saga(f"s{i}", f"trip-{i}", outcome))
    with trip_sessions() as session:
        done = list_entities(session, trips, {"status": "completed"})
        assert sorted(t.business_key for t in done) == ["trip-0", "trip-3"]
        assert len(list_entities(session, trips, {"current_service": "hotels"})) == 1
        assert len(list_entities(session, trips, {"events_seen": "4"})) == 1
        with pytest.raises(InvalidQueryError, match="destination"):
            list_entities(session, trips, {"nope": "x"})
        with pytest.raises(InvalidQueryError, match="use one of"):
            list_entities(session, trips, {"status": "paid"})
        with pytest.raises(InvalidQueryError, match="not a int"):
            list_entities(session, trips, {"events_seen": "many"})
        with pytest.raises(EntityNotFoundError, match="trips 'trip-9' not found"):
            get_entity(session, trips, "trip-9")


def test_duplicates_are_stale_per_saga(trip_sessions: sessionmaker[Session]) -> None:
    events = trip_saga("s1", "trip-1", "completed")
    _apply(trip_sessions, events)
    again = _apply(trip_sessions, [*events, *events])
    assert again == BatchResult(stale=2 * len(events))
    with trip_sessions() as session:
        rows = session.scalar(sa.select(sa.func.count()).select_from(trips.timeline))
    assert rows == len(events)


def test_parked_resolved_and_late_success_events(trip_sessions: sessionmaker[Session]) -> None:
    started = trip_saga("s1", "trip-1", "in_flight")  # at book_hotel, attempt 1
    last = started[-1]

    def next_event(cls: type[Any], **fields: Any) -> Any:
        seq = len(started) + 1
        event = cls(
            event_id=f"s1:{seq}",
            saga_id="s1",
            saga_type=last.saga_type,
            saga_version=1,
            seq=seq,
            occurred_at=last.occurred_at + timedelta(seconds=seq),
            business_key="trip-1",
            **fields,
        )
        started.append(event)
        return event

    error = ev.ErrorInfo(type="Timeout", message="no answer", uncertain=True)
    parked = next_event(ev.SagaParked, step="book_hotel", service="hotels", error=error)
    _apply(trip_sessions, started)
    trip = _get(trip_sessions, "trip-1")
    assert (trip.status, trip.current_step, trip.last_error) == (
        "parked",
        "book_hotel",
        "Timeout: no answer",
    )
    resolved = next_event(
        ev.StepResolved, step="book_hotel", service="hotels", data={"resolution": "applied"}
    )
    late = next_event(ev.StepLateSuccess, step="book_flight", service="airline", attempt=1)
    _apply(trip_sessions, [parked, resolved, late])
    trip = _get(trip_sessions, "trip-1")
    assert (trip.status, trip.current_step) == ("running", "book_hotel")  # late: timeline only
    assert [e.type for e in trip.timeline[-3:]] == [
        "saga_parked",
        "step_resolved",
        "step_late_success",
    ]


async def test_listeners_with_databases_of_their_own_commit_once_each(
    trip_sessions: sessionmaker[Session], sessions: sessionmaker[Session], engine: sa.Engine
) -> None:

    async def sink(letter: DeadLetter) -> None:
        raise AssertionError(letter)

    processor = BatchProcessor(
        targets=[Target(sessions, [OrderStatusListener()]), Target(trip_sessions, [trips])],
        dead_letters=sink,
        agent="test",
        max_delay=timedelta(milliseconds=10),
    )
    events = [
        *order_saga("o-s", "completed", order_id="o1"),
        *trip_saga("t-s", "trip-1", "completed"),
    ]
    records = [RawRecord("t", 0, i, e.saga_id.encode(), e.to_json()) for i, e in enumerate(events)]
    with count_sql(engine) as orders_sql:
        result = await processor.process(records)
    assert result.applied == len(events)
    assert orders_sql.commits == 1
    with sessions() as session:
        assert get_order(session, "o1").status == "completed"
    assert _get(trip_sessions, "trip-1").status == "completed"
    with trip_sessions() as session:  # each database holds only its own listener's rows
        assert session.scalar(sa.select(sa.func.count()).select_from(trips.table)) == 1


def test_column_defaults_fill_a_new_saga_row() -> None:
    class Base(DeclarativeBase):
        metadata = MetaData()

    class Counted(SagaRow, Base):
        __tablename__ = "counted"
        visits: Mapped[int] = mapped_column(Integer, default=0)
        tags: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)

    counted = Listener("counted", model=Counted, saga_types={"trip_booking"}, migrations=".")

    @counted.on_any
    def visit(row: Counted, event: Any) -> None:
        row.visits += 1
        row.tags[event.type] = row.tags.get(event.type, 0) + 1

    engine = create_db_engine("sqlite://")
    try:
        Base.metadata.create_all(engine)
        sessions = session_factory(engine)
        events = trip_saga("s1", "trip-1", "completed")
        commit_batch(sessions, [counted], events)
        with sessions() as session:
            view = get_entity(session, counted, "trip-1")
    finally:
        engine.dispose()
    assert view.fields["visits"] == len(events)
    assert view.fields["tags"]["step_succeeded"] == 3


def _reads_context(context: Any) -> str:  # SQLAlchemy's "context-sensitive" default
    return str(context.get_current_parameters()["note"])


@pytest.mark.parametrize("kind", ["default", "onupdate"])
def test_a_default_reading_the_execution_context_is_refused_when_the_listener_is_made(
    kind: str,
) -> None:
    """A listener has no execution context to give (it got ``None``: from 9a6c19a an
    ``onupdate=`` of that kind raised at every batch of a stored saga, and every event
    became a dead letter); a function of no argument, with or without a name, is fine."""

    class Base(DeclarativeBase):
        metadata = MetaData()

    class Noted(SagaRow, Base):
        __tablename__ = "noted"
        note: Mapped[str | None] = mapped_column(sa.String(20))
        shout: Mapped[str | None] = mapped_column(sa.String(20), **{kind: _reads_context})
        plain: Mapped[str | None] = mapped_column(
            sa.String(40), **{kind: functools.partial(str, "p")}
        )
        stamp: Mapped[datetime | None] = mapped_column(**{kind: datetime.now})

    with pytest.raises(ListenerConfigError, match=rf"noted\.shout: its {kind}= function"):
        Listener("noted", model=Noted, saga_types={"trip_booking"}, migrations=".")
    Noted.__table__.c.shout.default = Noted.__table__.c.shout.onupdate = None
    Listener("noted", model=Noted, saga_types={"trip_booking"}, migrations=".")


def test_a_model_whose_saga_id_is_not_unique_is_refused() -> None:
    """``ON CONFLICT (saga_id)`` needs it unique: with a composite primary key every batch
    failed (SQLite: an OperationalError, retried as an outage for ever)."""

    class Base(DeclarativeBase):
        metadata = MetaData()

    class Regional(SagaRow, Base):
        __tablename__ = "regional"
        region: Mapped[str] = mapped_column(sa.String(5), primary_key=True, default="eu")

    with pytest.raises(
        ListenerConfigError, match=r"table regional has primary key \(region, saga_id\)"
    ):
        Listener("regional", model=Regional, saga_types={"trip_booking"}, migrations=".")

    class UniqueToo(SagaRow, Base):
        __tablename__ = "unique_too"
        __table_args__ = (sa.UniqueConstraint("saga_id"),)
        region: Mapped[str] = mapped_column(sa.String(5), primary_key=True, default="eu")

    Listener("unique_too", model=UniqueToo, saga_types={"trip_booking"}, migrations=".")


@pytest.mark.parametrize("filled", [sa.Computed("last_seq * 2"), sa.Identity()])
def test_a_column_the_database_fills_is_refused_when_the_listener_is_made(filled: Any) -> None:
    """Written at every batch (NULL or a value), it failed every batch: PostgreSQL refuses
    a value in a generated column, NULL in an identity one; every event a dead letter."""

    class Base(DeclarativeBase):
        metadata = MetaData()

    class Filled(SagaRow, Base):
        __tablename__ = "filled"
        extra: Mapped[int | None] = mapped_column(Integer, filled)

    with pytest.raises(ListenerConfigError, match=r"filled\.extra: a (Computed|Identity) column"):
        Listener("filled", model=Filled, saga_types={"trip_booking"}, migrations=".")
