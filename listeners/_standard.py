"""How lifecycle events move the standard "where is it now" part: pure, no I/O.

The framework runs :func:`advance` on a saga's row before the listener's own handlers,
so a handler sees (and may override) an up-to-date status, step, service and error.
Event types this module does not name (new ones the coordinator adds) only move
``updated_at`` and ``last_seq``; they still reach the timeline and "any event" handlers.

The rows are model instances that never enter a session (the framework writes them
with Core statements), so the standard part is written straight into the instance's
``__dict__``, where the mapped attributes read it back: the ORM's change tracking on each
assignment (an event dispatch and a history record per attribute) cost a third of the
listener's CPU per event and serves nothing here. Handlers assign attributes as usual.
A model that hooks a standard column (``@validates``, an attribute ``"set"`` listener)
gets plain assignments instead, so its hooks run: looked up once per batch, so a hook
registered while the listener runs takes effect from the next batch.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from sqlalchemy.orm import Mapper, class_mapper

from listeners._events import Event
from listeners._rows import STANDARD_COLUMNS, SagaRow, utc

__all__ = ["SAGA_STATUSES", "Fields", "advance", "describe_error", "standard_fields", "start_row"]

#: Statuses the standard part uses (a listener may declare its own vocabulary).
SAGA_STATUSES = frozenset(
    {
        "running",
        "compensating",
        "completed",
        "compensated",
        "cancelled",
        "compensation_failed",
        "parked",
    }
)

_STATUS_AFTER = MappingProxyType(
    {
        "saga_started": "running",
        "saga_compensating": "compensating",
        "saga_completed": "completed",
        "saga_compensated": "compensated",
        "saga_cancelled": "cancelled",
        "saga_compensation_failed": "compensation_failed",
        "saga_parked": "parked",
    }
)
# Events that put the saga in the hands of the event's step and service.
_AT_SERVICE = frozenset(
    {
        "step_started",
        "step_succeeded",
        "step_failed",
        "compensation_started",
        "compensation_succeeded",
        "compensation_failed",
        "saga_parked",
        "step_resolved",
    }
)
# After these the saga is with no service any more.
_SETTLED = frozenset({"saga_completed", "saga_compensated", "saga_cancelled"})
_CLEARS_ERROR = frozenset({"step_succeeded", "saga_completed"})
_SETS_ERROR = frozenset(
    {"step_failed", "compensation_failed", "saga_compensation_failed", "saga_parked"}
)


def describe_error(event: Event) -> str | None:
    """``"Type: message"`` of the event's error, or ``None``."""
    if event.error is None:
        return None
    return f"{event.error.type}: {event.error.message}"


class _Assign:
    """Writes ``fields[name] = value`` as ``setattr``: the ORM's hooks run."""

    __slots__ = ("row",)

    def __init__(self, row: SagaRow) -> None:
        self.row = row

    def __setitem__(self, name: str, value: Any) -> None:
        setattr(self.row, name, value)


#: Where a row's standard part is written: ``vars`` (its ``__dict__``) or ``_Assign``.
Fields = Callable[[SagaRow], Any]


def standard_fields(model: type) -> Fields:
    """How the standard part of ``model``'s rows is written, as its hooks stand now.

    Straight into the instance's ``__dict__`` unless the model hooks a standard column
    (a validator, an attribute ``"set"`` listener), then as assignments so they run. An
    attribute listener may be registered at any time, so this is asked again for every
    batch (:meth:`~listeners._declarative.Listener.check_hooks`); it costs about 10 us,
    too much per event.
    """
    mapper: Mapper[Any] = class_mapper(model)  # configures mappers: validators are in place
    manager = mapper.class_manager
    hooked = any(
        name in mapper.validators or (name in manager and manager[name].dispatch.set)
        for name in STANDARD_COLUMNS
    )
    return _Assign if hooked else vars


def start_row(
    row: SagaRow, event: Event, defaults: dict[str, Any], fields: Fields | None = None
) -> None:
    """Fill a new saga's row from its first applied event (and the model's defaults).

    ``fields`` is :func:`standard_fields` of the row's model (looked up now if not given).
    """
    for name, value in defaults.items():
        setattr(row, name, value)
    at = utc(event.occurred_at)
    state = (fields or standard_fields(type(row)))(row)
    state["saga_id"] = event.saga_id
    state["business_key"] = event.business_key or event.saga_id
    state["saga_type"] = event.saga_type
    state["status"] = "running"
    state["current_step"] = state["current_service"] = state["last_error"] = None
    state["started_at"] = state["updated_at"] = at
    state["last_seq"] = 0


def advance(row: SagaRow, event: Event, fields: Fields | None = None) -> None:
    """Move the standard part of ``row`` past ``event`` (its ``seq`` is newer).

    ``fields`` is :func:`standard_fields` of the row's model (looked up now if not given).
    """
    state = (fields or standard_fields(type(row)))(row)
    kind = event.type
    if kind in _AT_SERVICE and event.step is not None:
        state["current_step"], state["current_service"] = event.step, event.service
    if kind in _CLEARS_ERROR:
        state["last_error"] = None  # a retried failure was overcome; it stays in the timeline
    if kind in _SETS_ERROR:
        state["last_error"] = describe_error(event) or row.last_error
    if kind in _STATUS_AFTER:
        state["status"] = _STATUS_AFTER[kind]
    elif kind == "step_resolved" and row.status == "parked":
        state["status"] = "running"  # an operator resolved the parked step; the saga goes on
    if kind in _SETTLED:
        state["current_step"] = state["current_service"] = None
    state["updated_at"] = max(utc(row.updated_at), utc(event.occurred_at))
    state["last_seq"] = event.seq
