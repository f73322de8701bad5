"""The trip-booking saga the trips listener follows: flight, hotel, car, all in-process.

Its participants are toy in-process services (``inline=True``), so the saga runs with
nothing but a coordinator worker: enough to drive the listener from real lifecycle
events. A destination without hotels (``"Nowhere"``) makes the hotel refuse, and the
booked flight is cancelled.
"""

from __future__ import annotations

from pydantic import BaseModel

from coordinator import BusinessFailure, Saga, Service, Step, StepContext

__all__ = ["TRIP_SAGA", "Booking", "TripRequest"]


class TripRequest(BaseModel):
    """What the traveller asked for."""

    trip_id: str
    destination: str


class Booking(BaseModel):
    """A participant's confirmation."""

    reference: str


AIRLINE = Service("airline", inline=True)
HOTELS = Service("hotels", inline=True)
CARS = Service("cars", inline=True)


async def book(ctx: StepContext[TripRequest]) -> Booking:
    """Book with the step's service; hotels have no rooms in ``Nowhere``."""
    if ctx.step == "book_hotel" and ctx.input.destination == "Nowhere":
        raise BusinessFailure(f"no hotel in {ctx.input.destination}")
    return Booking(reference=f"{ctx.step}-{ctx.input.trip_id}")


async def cancel(ctx: StepContext[TripRequest]) -> None:
    """Cancel the step's booking (nothing to undo in this toy)."""


TRIP_SAGA = Saga("trip_booking", version=1, input=TripRequest, steps=[
    Step("book_flight", service=AIRLINE, action=book, compensation=cancel),
    Step("book_hotel", service=HOTELS, action=book, compensation=cancel),
    Step("book_car", service=CARS, action=book),
])  # fmt: skip
