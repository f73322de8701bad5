"""Trips: where each trip booking is, and what it holds. A listener for a non-order saga.

The saga ``trip_booking`` books a flight, then a hotel, then a car; this listener keeps
one row per saga with the standard "where is it now" columns (status, current step and
service, last error, updated at) plus the trip's own. Run it with::

    python -m listeners migrate examples.trips:trips
    python -m listeners worker examples.trips:trips
    python -m listeners get examples.trips:trips TRIP_ID
    curl localhost:6067/trips/TRIP_ID            # and /trips?status=..., /trips-to/Lisbon
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, MetaData, String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from listeners import NAMING_CONVENTION, Event, Listener, SagaRow

__all__ = ["Trip", "trips"]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Trip(SagaRow, Base):
    """One trip booking saga; ``business_key`` is the trip id."""

    __tablename__ = "trips"

    destination: Mapped[str | None] = mapped_column(String(100))
    flight: Mapped[str | None] = mapped_column(String(40))
    hotel: Mapped[str | None] = mapped_column(String(40))
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    events_seen: Mapped[int] = mapped_column(Integer, default=0)


trips = Listener("trips", model=Trip, saga_types={"trip_booking"})


@trips.on_start
def started(trip: Trip, event: Event) -> None:
    trip.destination = (event.data or {}).get("destination")


@trips.on_step_succeeded("book_flight", "book_hotel")
def booked(trip: Trip, event: Event) -> None:
    reference = (event.data or {}).get("reference")
    if event.step == "book_flight":
        trip.flight = reference
    else:
        trip.hotel = reference


@trips.on_compensation("book_flight", "book_hotel")
def unbooked(trip: Trip, event: Event) -> None:
    if event.step == "book_flight":
        trip.flight = None
    else:
        trip.hotel = None


@trips.on_complete
def confirmed(trip: Trip, event: Event) -> None:
    trip.confirmed_at = event.occurred_at


@trips.on_any
def counted(trip: Trip, event: Event) -> None:
    trip.events_seen += 1


@trips.page("/trips-to/{destination}")
def to_destination(session: Session, destination: str) -> dict[str, int]:
    """How many trip sagas to ``destination`` are in each status (a page of our own)."""
    rows = session.execute(
        select(Trip.status, func.count())
        .where(Trip.destination == destination)
        .group_by(Trip.status)
    )
    return {status: count for status, count in rows.tuples()}
