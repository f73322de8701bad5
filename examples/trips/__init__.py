"""Example listener for a non-order saga (trip bookings): see ``listener.py``."""

from __future__ import annotations

from examples.trips.listener import Trip, trips

__all__ = ["Trip", "trips"]
