"""Queries every listener gets: one business entity with its history, or a filtered list.

An entity (an order, a trip) is what its ``business_key`` names. Several sagas may
share a key; the entity's view is its **most recently started saga** (latest
``started_at``, then highest ``saga_id``), and the other sagas, each with its own
timeline, are its ``history``. ``seq`` is never compared across those sagas.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from listeners._declarative import Listener
from listeners._errors import EntityNotFoundError, InvalidQueryError
from listeners._rows import STANDARD_COLUMNS, naive_zone, utc, utc_read

__all__ = ["MAX_LIMIT", "EntityView", "SagaView", "TimelineEntry", "get_entity", "list_entities"]

#: Largest page :func:`list_entities` returns.
MAX_LIMIT = 1000


class TimelineEntry(BaseModel):
    """One applied lifecycle event."""

    model_config = ConfigDict(frozen=True)

    seq: int
    type: str
    step: str | None
    service: str | None
    attempt: int | None
    error: str | None
    occurred_at: datetime


class SagaView(BaseModel):
    """One saga of an entity: the standard part and the listener's own columns."""

    model_config = ConfigDict(frozen=True)

    saga_id: str
    business_key: str
    saga_type: str
    status: str
    current_step: str | None
    current_service: str | None
    last_error: str | None
    started_at: datetime
    updated_at: datetime
    last_seq: int
    fields: dict[str, Any]


class SagaHistory(SagaView):
    """An earlier saga of the entity, with its own timeline."""

    timeline: list[TimelineEntry]


class EntityView(SagaView):
    """An entity: its most recently started saga, that saga's timeline, and the others."""

    timeline: list[TimelineEntry]
    history: list[SagaHistory]


def _saga(listener: Listener[Any], row: Mapping[str, Any], zone: tzinfo) -> dict[str, Any]:
    plain = utc_read(row, listener.wall_clocks, zone)
    values = {name: plain[name] for name in STANDARD_COLUMNS}
    own = [attr for attr in listener.attributes if attr not in STANDARD_COLUMNS]
    values["fields"] = {attr: plain[attr] for attr in own}
    return values


def _typed(listener: Listener[Any], attr: str, column: sa.Column[Any], value: str) -> Any:
    """``value`` (text from a URL or the CLI) as the column's Python type."""
    try:
        kind = column.type.python_type
    except NotImplementedError:
        return value
    try:
        if kind is bool:
            return {"true": True, "1": True, "false": False, "0": False}[value.lower()]
        return kind(value) if kind in (int, float, str) else value
    except (KeyError, ValueError) as exc:
        raise InvalidQueryError(
            f"{listener.name} filter {attr}={value!r} is not a {kind.__name__}"
        ) from exc


def _select(listener: Listener[Any]) -> sa.Select[Any]:
    return sa.select(*(listener.column(attr).label(attr) for attr in listener.attributes))


def get_entity(session: Session, listener: Listener[Any], key: str) -> EntityView:
    """The entity ``key`` of ``listener``: newest saga first, older ones in ``history``.

    Raises:
        EntityNotFoundError: No event of a saga with that business key was applied.
    """
    key_col = listener.column("business_key")
    rows = session.execute(
        _select(listener)
        .where(key_col == key)
        .order_by(listener.column("started_at").desc(), listener.column("saga_id").desc())
    )
    zone = naive_zone(session)
    sagas = [_saga(listener, dict(row), zone) for row in rows.mappings()]
    if not sagas:
        raise EntityNotFoundError(
            f"{listener.name} {key!r} not found; check the key, or that a worker running "
            f"listener {listener.name!r} has caught up (python -m listeners worker)"
        )
    timeline = listener.timeline
    events = session.execute(
        sa.select(timeline)
        .where(timeline.c[key_col.name] == key)
        .order_by(timeline.c.saga_id, timeline.c.seq)
    )
    by_saga: dict[str, list[TimelineEntry]] = {}
    for event in events.mappings():
        entry = TimelineEntry(
            **{name: event[name] for name in TimelineEntry.model_fields if name != "occurred_at"},
            occurred_at=utc(event["occurred_at"]),
        )
        by_saga.setdefault(event["saga_id"], []).append(entry)
    newest, *older = sagas
    history = [SagaHistory(**saga, timeline=by_saga.get(saga["saga_id"], [])) for saga in older]
    return EntityView(**newest, timeline=by_saga.get(newest["saga_id"], []), history=history)


def list_entities(
    session: Session,
    listener: Listener[Any],
    filters: Mapping[str, str] | None = None,
    *,
    limit: int = 100,
) -> list[SagaView]:
    """Entities (their newest saga) matching ``filters``, most recently updated first.

    Args:
        session: Session of the listener's database.
        listener: Whose entities.
        filters: Model attribute to the value it must equal, e.g. ``{"status": "paid"}``
            (compared as text for non-text columns).
        limit: Most entities returned (1..1000).

    Raises:
        InvalidQueryError: An unknown attribute or status, or ``limit`` out of range.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQueryError(f"limit {limit} is out of range; use 1..{MAX_LIMIT}")
    conditions = []
    for attr, value in (filters or {}).items():
        if attr not in listener.attributes:
            raise InvalidQueryError(
                f"{listener.name} has no attribute {attr!r} to filter on; use one of "
                f"{list(listener.attributes)}"
            )
        if attr == "status" and value not in listener.statuses:
            raise InvalidQueryError(
                f"unknown {listener.name} status {value!r}; use one of {sorted(listener.statuses)}"
            )
        column = listener.column(attr)
        conditions.append(column == _typed(listener, attr, column, value))
    newer = listener.table.alias("newer")
    key, started, saga = (listener.column(a) for a in ("business_key", "started_at", "saga_id"))
    superseded = sa.exists().where(
        newer.c[key.name] == key,
        sa.or_(
            newer.c[started.name] > started,
            sa.and_(newer.c[started.name] == started, newer.c[saga.name] > saga),
        ),
    )
    rows = session.execute(
        _select(listener)
        .where(*conditions, ~superseded)
        .order_by(listener.column("updated_at").desc(), key)
        .limit(limit)
    )
    zone = naive_zone(session)
    return [SagaView(**_saga(listener, dict(row), zone)) for row in rows.mappings()]
