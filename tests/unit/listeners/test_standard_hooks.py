"""A model's own hooks on the standard columns run when the framework moves them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import MetaData, Text, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, validates

from listeners import NAMING_CONVENTION, Listener, SagaRow, create_db_engine
from listeners._events import Event, validate_any_event
from listeners._framework import apply_batch, fold


class _Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class _Order(SagaRow, _Base):
    __tablename__ = "hooked_orders"
    steps_seen: Mapped[str | None] = mapped_column(Text, default="")

    @validates("last_error")
    def _redact(self, key: str, value: str | None) -> str | None:
        return None if value is None else value.replace("4111111111111111", "4111…")


@event.listens_for(_Order.current_step, "set")
def _trail(target: _Order, value: str | None, old: Any, initiator: Any) -> None:
    if value:
        target.steps_seen = (target.steps_seen or "") + value + ">"


class _Plain(SagaRow, _Base):
    __tablename__ = "plain_orders"


class _Late(SagaRow, _Base):
    """Hooked only after its listener has applied a batch."""

    __tablename__ = "late_orders"


def _event(seq: int, kind: str, **fields: Any) -> Event:
    return validate_any_event(
        {
            "event_id": f"s:{seq}",
            "saga_id": "s",
            "saga_type": "order",
            "saga_version": 1,
            "seq": seq,
            "type": kind,
            "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
            **fields,
        }
    )


_EVENTS = [
    _event(1, "saga_started"),
    _event(2, "step_started", step="pay", service="payments", attempt=1),
    _event(
        3,
        "step_failed",
        step="pay",
        service="payments",
        attempt=1,
        error={"type": "Declined", "message": "card 4111111111111111 declined"},
    ),
]


def _applied(model: type[Any]) -> Any:
    listener = Listener(model.__tablename__, model=model, saga_types={"order"}, migrations=".")
    row = None
    for item in _EVENTS:
        row = listener.apply(row, item)
    assert row is not None
    return row


def test_a_validator_and_a_set_listener_on_standard_columns_run() -> None:
    row = _applied(_Order)
    assert row.last_error == "Declined: card 4111… declined"
    assert row.steps_seen == "pay>pay>"
    assert (row.status, row.current_step, row.last_seq) == ("running", "pay", 3)


def test_a_model_without_hooks_gets_the_same_standard_part() -> None:
    row = _applied(_Plain)
    assert row.last_error == "Declined: card 4111111111111111 declined"
    assert (row.status, row.current_step, row.current_service, row.last_seq) == (
        "running",
        "pay",
        "payments",
        3,
    )


def test_a_set_listener_registered_after_a_batch_runs_from_the_next_batch() -> None:
    listener = Listener("late", model=_Late, saga_types={"order"}, migrations=".")
    first, _, _ = fold(listener, {}, {"s": _EVENTS[:2]})
    seen: list[str | None] = []

    def trail(target: _Late, value: str | None, old: Any, initiator: Any) -> None:
        seen.append(value)

    event.listen(_Late.current_step, "set", trail)
    try:
        changed, _, _ = fold(listener, {"s": first[0]}, {"s": _EVENTS[2:]})
    finally:
        event.remove(_Late.current_step, "set", trail)
    assert seen == ["pay"]
    assert changed[0].current_step == "pay"
    again, _, _ = fold(listener, {}, {"s": _EVENTS[:2]})  # removed: not called any more
    assert seen == ["pay"] and again[0].current_step == "pay"


def _stored_after(batches: list[list[Event]]) -> Any:
    engine = create_db_engine("sqlite://")
    listener = Listener("hooked", model=_Order, saga_types={"order"}, migrations=".")
    _Base.metadata.create_all(engine)
    for batch in batches:
        with Session(engine) as session, session.begin():
            apply_batch(session, listener, batch)
    with engine.connect() as conn:
        row = conn.execute(sa.select(_Order.__table__)).one()  # type: ignore[call-overload]
    engine.dispose()
    return row


def test_loading_a_stored_row_runs_no_hook() -> None:
    """The ORM loads a row without its validators or "set" listeners; so does a batch,
    or an audit trail would grow with every batch the saga's events arrive in."""
    assert _stored_after([_EVENTS[:2], _EVENTS[2:]]) == _stored_after([_EVENTS])
    assert _stored_after([_EVENTS[:1], _EVENTS[1:2], _EVENTS[2:]]).steps_seen == "pay>pay>"
