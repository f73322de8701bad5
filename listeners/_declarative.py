"""Declare a listener: a SQLAlchemy model and a few handlers per lifecycle event.

Example (a complete listener; see the README section "Write your own listener")::

    class Trip(SagaRow, Base):                  # standard columns + your own
        __tablename__ = "trips"
        destination: Mapped[str | None] = mapped_column(String(100))

    trips = Listener("trips", model=Trip, saga_types={"trip_booking"})

    @trips.on_start
    def started(trip: Trip, event: Event) -> None:
        trip.destination = (event.data or {}).get("destination")

The framework does the rest (see :mod:`listeners._framework`): per batch it loads the
rows of every saga in the batch with one ``SELECT``, runs the handlers on plain model
instances (no session, no I/O), and writes them back with one multi-row upsert plus one
multi-row insert into the timeline, in the batch's single transaction.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from listeners._bulk import TableSql
from listeners._errors import ListenerConfigError
from listeners._events import Event
from listeners._flush import FlushRules
from listeners._rows import (
    STANDARD_COLUMNS,
    SagaRow,
    aware,
    naive_zone,
    timeline_table,
    utc_read,
    wall_clocks,
)
from listeners._standard import (
    SAGA_STATUSES,
    Fields,
    advance,
    describe_error,
    standard_fields,
    start_row,
)

__all__ = ["Handler", "Listener"]

RowT = TypeVar("RowT", bound=SagaRow)
#: A handler updates the row of one saga for one event; it returns nothing.
Handler = Callable[[RowT, Event], None]
_H = TypeVar("_H", bound=Callable[..., None])
_Q = TypeVar("_Q", bound=Callable[..., Any])


class Listener(Generic[RowT]):
    """A listener: its model, the saga types it follows, and its handlers.

    Args:
        name: Short unique name: URL path (``GET /{name}/{key}``), CLI argument,
            dead-letter agent, and Alembic version table ``alembic_version_{name}``.
        model: Mapped class inheriting :class:`~listeners._rows.SagaRow` (one row per saga).
        saga_types: Saga types whose events it applies; others are ignored.
        statuses: Statuses its rows can have (validates list filters); defaults to the
            saga statuses of the standard part.
        timeline: Name of its timeline table; defaults to ``{model table}_timeline``.
        migrations: Directory of its Alembic revisions; defaults to ``migrations/`` next
            to the module defining ``model``.
    """

    def __init__(
        self,
        name: str,
        *,
        model: type[RowT],
        saga_types: Collection[str],
        statuses: Collection[str] | None = None,
        timeline: str | None = None,
        migrations: Path | str | None = None,
    ) -> None:
        if not name.isidentifier():
            raise ListenerConfigError(
                f"listener name {name!r} must be an identifier (letters, digits, _), "
                "e.g. 'trips': it names a URL path and an Alembic version table"
            )
        if not saga_types:
            raise ListenerConfigError(f"listener {name!r} handles no saga type; pass saga_types")
        if not (isinstance(model, type) and issubclass(model, SagaRow)):
            raise ListenerConfigError(
                f"listener {name!r}: model {model!r} must be a mapped class inheriting "
                "listeners.SagaRow"
            )
        self.name = name
        self.model = model
        self.saga_types = frozenset(saga_types)
        self.statuses = frozenset(statuses) if statuses is not None else SAGA_STATUSES
        self.table: sa.Table = model.__table__  # type: ignore[attr-defined]
        self._columns = {attr: col for attr, col in sa.inspect(model).columns.items()}
        _check_one_row_per_saga(name, self.table, self._columns["saga_id"])
        key_column = self._columns["business_key"].name
        self.timeline = timeline_table(
            self.table.metadata, timeline or f"{self.table.name}_timeline", key_column=key_column
        )
        self._ensure_indexes()
        self._keys = {attr: col.key for attr, col in self._columns.items()}
        #: Attributes whose naive datetimes are wall clocks of the session's time zone.
        self.wall_clocks = wall_clocks(self._columns)
        # What a flush would write for the listener's own columns: defaults, onupdate.
        self._flush = FlushRules(
            {attr: col for attr, col in self._columns.items() if attr not in STANDARD_COLUMNS}
        )
        self._row_sql = TableSql(self.table, self._columns["saga_id"], self._flush.sql)
        self._timeline_sql = TableSql(self.timeline)
        self.migrations = Path(migrations) if migrations is not None else _beside(model)
        self.version_table = f"alembic_version_{name}"
        #: how ``python -m listeners`` names it (``module:attribute`` or a built-in name),
        #: set when it is loaded by that name; error messages quote it in commands
        self.spec: str | None = None
        # Column defaults (scalar, or callables taking no argument) fill a new saga's row.
        self._defaults = {
            attr: col.default
            for attr, col in self._columns.items()
            if col.default is not None and (col.default.is_scalar or col.default.is_callable)
        }
        self._fields: Fields | None = None  # see check_hooks
        self._by_type: dict[str, list[tuple[frozenset[str] | None, Handler[RowT]]]] = {}
        self._any: list[Handler[RowT]] = []
        self.pages: dict[str, Callable[..., Any]] = {}

    # -- declaring handlers -------------------------------------------------------------

    def on(self, *types: str, steps: Collection[str] = ()) -> Callable[[_H], _H]:
        """Decorator: call the handler for events of ``types`` (of ``steps``, if given)."""
        only = frozenset(steps) or None

        def register(handler: _H) -> _H:
            for kind in types:
                self._by_type.setdefault(kind, []).append((only, handler))
            return handler

        return register

    def on_start(self, handler: _H) -> _H:
        """Decorator: the saga started (``saga_started``; ``event.data`` is its input)."""
        return self.on("saga_started")(handler)

    def on_step_succeeded(self, *steps: str) -> Callable[[_H], _H]:
        """Decorator: one of ``steps`` (any step if none) succeeded."""
        return self.on("step_succeeded", steps=steps)

    def on_step_failed(self, *steps: str) -> Callable[[_H], _H]:
        """Decorator: an attempt of one of ``steps`` (any if none) failed."""
        return self.on("step_failed", steps=steps)

    def on_compensation(self, *steps: str) -> Callable[[_H], _H]:
        """Decorator: the effect of one of ``steps`` (any if none) was undone.

        Compensation events name the step they undo (``event.step``), not the
        compensation action.
        """
        return self.on("compensation_succeeded", steps=steps)

    def on_compensating(self, handler: _H) -> _H:
        """Decorator: unwinding began (``saga_compensating``)."""
        return self.on("saga_compensating")(handler)

    def on_complete(self, handler: _H) -> _H:
        """Decorator: every step succeeded (``saga_completed``)."""
        return self.on("saga_completed")(handler)

    def on_compensated(self, handler: _H) -> _H:
        """Decorator: a step failed and the saga was rolled back (``saga_compensated``)."""
        return self.on("saga_compensated")(handler)

    def on_cancel(self, handler: _H) -> _H:
        """Decorator: an operator cancelled the saga and it was rolled back."""
        return self.on("saga_cancelled")(handler)

    def on_any(self, handler: _H) -> _H:
        """Decorator: every applied event, after the specific handlers (new types too)."""
        self._any.append(handler)
        return handler

    def page(self, path: str) -> Callable[[_Q], _Q]:
        """Decorator: serve ``GET {path}`` on the worker, next to the standard queries.

        The function gets a read-only ``Session`` of this listener's database and the
        path's ``{parameters}`` as keyword arguments, runs in a thread, and returns
        something JSON-serialisable (pydantic models are dumped)::

            @trips.page("/trips-to/{destination}")
            def to(session: Session, destination: str) -> list[str]:
                return list(session.scalars(select(Trip.business_key).where(...)))
        """

        def register(query: _Q) -> _Q:
            self.pages[path] = query
            return query

        return register

    # -- what the framework calls (framework.apply_batch) -------------------------------

    def handles(self, event: Event) -> bool:
        """Whether this listener applies ``event``."""
        return event.saga_type in self.saga_types

    def load(self, session: Session, saga_ids: Collection[str]) -> dict[str, RowT]:
        """Rows of ``saga_ids`` as detached model instances, in one ``SELECT``."""
        columns = [col.label(attr) for attr, col in self._columns.items()]
        result = self._row_sql.select(session, columns, list(saga_ids))
        # A naive datetime comes from SQLite (every one stored there is UTC), from a
        # PostgreSQL column without a time zone (a wall clock of the session's TimeZone)
        # or from a TypeDecorator (UTC). Each is made the aware UTC instant it stands for,
        # as the events' times are: handlers compare and subtract them, and one array
        # takes a column's values.
        zone = naive_zone(session)
        rows = {}
        for values in result.mappings():
            # Stored values go into the instance's __dict__, as the ORM loads them: the
            # model's validators and "set" listeners ran when the values were set, and
            # running them again would make a row depend on how events were batched.
            row = self.model()
            row.__dict__.update(utc_read(values, self.wall_clocks, zone))
            rows[row.saga_id] = row
        if self._flush:
            self._flush.stored(rows.values())  # written back, they are updates
        return rows

    def last_seq(self, row: RowT) -> int:
        """``seq`` of the newest event applied to ``row``."""
        return row.last_seq

    def check_hooks(self) -> None:
        """Look again at whether the model hooks a standard column.

        A validator or an attribute ``"set"`` listener on one decides how :meth:`apply`
        writes the standard part. The framework calls this at the start of every batch
        (:func:`~listeners._framework.fold`); a direct caller of :meth:`apply` that
        registers such a hook calls it after that.
        """
        self._fields = standard_fields(self.model)

    def apply(self, row: RowT | None, event: Event) -> RowT:
        """``row`` after ``event``: the standard part, then the handlers, in order."""
        fields = self._fields
        if fields is None:
            self.check_hooks()
            fields = self._fields
        if row is None:
            row = self.model()
            defaults = {
                attr: default.arg(None) if default.is_callable else default.arg
                for attr, default in self._defaults.items()
            }
            start_row(row, event, defaults, fields)
        advance(row, event, fields)
        for steps, handler in self._by_type.get(event.type, ()):
            if steps is None or event.step in steps:
                handler(row, event)
        for handler in self._any:
            handler(row, event)
        return row

    def write(self, session: Session, changed: Sequence[RowT], applied: Sequence[Event]) -> None:
        """Upsert the changed rows and insert the applied events: one statement each."""
        keys = self._keys
        values = {key: [getattr(row, attr) for row in changed] for attr, key in keys.items()}
        self._row_sql.upsert(
            session,
            values,
            keep=(keys["started_at"],),
            newer=keys["last_seq"],
            modes=self._flush.settle(changed, values) if self._flush else None,
        )
        key_of = {row.saga_id: row.business_key for row in changed}
        self._timeline_sql.insert_new(
            session,
            {
                "saga_id": [event.saga_id for event in applied],
                "seq": [event.seq for event in applied],
                self._columns["business_key"].name: [key_of[event.saga_id] for event in applied],
                "type": [event.type for event in applied],
                "step": [event.step for event in applied],
                "service": [event.service for event in applied],
                "attempt": [event.attempt for event in applied],
                "error": [describe_error(event) for event in applied],
                "occurred_at": [aware(event.occurred_at) for event in applied],
            },
        )

    # -- helpers ------------------------------------------------------------------------

    def column(self, attr: str) -> sa.Column[Any]:
        """The table column behind model attribute ``attr``."""
        return self._columns[attr]

    @property
    def attributes(self) -> tuple[str, ...]:
        """Model attributes: the standard ones first, then the listener's own."""
        own = tuple(attr for attr in self._columns if attr not in STANDARD_COLUMNS)
        return (*STANDARD_COLUMNS, *own)

    def _ensure_indexes(self) -> None:
        cols = self._columns
        wanted = [
            (cols["business_key"], cols["started_at"]),
            (cols["status"], cols["updated_at"]),
            (cols["updated_at"],),
        ]
        have = {tuple(c.name for c in index.columns) for index in self.table.indexes}
        for columns in wanted:
            if tuple(c.name for c in columns) not in have:
                sa.Index(None, *columns)

    def __repr__(self) -> str:
        return f"<Listener {self.name!r} on {sorted(self.saga_types)}>"


def _check_one_row_per_saga(name: str, table: sa.Table, saga_id: sa.Column[Any]) -> None:
    """Raise unless ``saga_id`` alone is the table's primary key or unique.

    A batch upserts ``ON CONFLICT (saga_id)``: with a composite key (a column of the
    model's own declared ``primary_key=True``) every batch failed, on SQLite as an
    "outage" retried for ever, on PostgreSQL as dead letters.
    """
    keys = [{col.key for col in table.primary_key.columns}]
    keys += [
        {col.key for col in constraint.columns}
        for constraint in table.constraints
        if isinstance(constraint, sa.UniqueConstraint)
    ]
    keys += [{col.key for col in index.columns} for index in table.indexes if index.unique]
    if saga_id.unique or {saga_id.key} in keys:
        return
    primary = ", ".join(col.name for col in table.primary_key.columns)
    raise ListenerConfigError(
        f"listener {name!r}: table {table.name} has primary key ({primary}); a listener keeps "
        f"one row per saga, so {saga_id.name} must be its primary key alone (drop "
        "primary_key=True from the model's other columns) or unique"
    )


def _beside(model: type) -> Path:
    module = sys.modules.get(model.__module__)
    source = getattr(module, "__file__", None)
    if source is None:
        raise ListenerConfigError(
            f"cannot tell where the migrations of {model.__name__} live; pass migrations="
        )
    return Path(source).resolve().parent / "migrations"
