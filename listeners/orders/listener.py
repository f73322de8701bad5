"""The order-status listener: loads, folds and bulk-writes orders per batch."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from coordinator.events import LifecycleEvent
from listeners.errors import ListenerConfigError
from listeners.framework import Listener
from listeners.orders.models import Order, OrderEvent
from listeners.orders.status import OrderState, StatusRules, describe_error, next_state, utc
from listeners.settings import DEFAULT_ORDER_STATUS_BY_STEP

__all__ = ["OrderStatusListener"]

_ORDERS: Table = Order.__table__  # type: ignore[assignment]
_EVENTS: Table = OrderEvent.__table__  # type: ignore[assignment]
_STATE_COLUMNS = tuple(OrderState.__dataclass_fields__)


class OrderStatusListener(Listener[OrderState]):
    """Keeps ``orders`` (status, current service, last error) and ``order_events``.

    Per batch it runs one ``SELECT ... WHERE saga_id IN (...)``, one multi-row
    ``INSERT ... ON CONFLICT (order_id) DO UPDATE`` for the changed orders, and one
    multi-row insert of their history, whatever the number of events.

    Args:
        saga_types: Saga types whose events it applies.
        status_by_step: Status an order reaches when the named step succeeds.
    """

    name = "order_status"

    def __init__(
        self,
        *,
        saga_types: Collection[str] = ("order_fulfillment",),
        status_by_step: Mapping[str, str] | None = None,
    ) -> None:
        if not saga_types:
            raise ListenerConfigError(
                "order-status listener handles no saga type; set LISTENER_ORDER_SAGA_TYPES, "
                "e.g. '[\"order_fulfillment\"]'"
            )
        self.saga_types = frozenset(saga_types)
        self.rules = StatusRules(
            DEFAULT_ORDER_STATUS_BY_STEP if status_by_step is None else status_by_step
        )

    def load(self, session: Session, saga_ids: Collection[str]) -> dict[str, OrderState]:
        """Load the orders of ``saga_ids`` in one query."""
        rows = session.execute(
            select(*(_ORDERS.c[name] for name in _STATE_COLUMNS)).where(
                _ORDERS.c.saga_id.in_(list(saga_ids))
            )
        )
        states = {}
        for row in rows.mappings():
            values = dict(row)
            values["created_at"] = utc(values["created_at"])
            values["updated_at"] = utc(values["updated_at"])
            states[values["saga_id"]] = OrderState(**values)
        return states

    def last_seq(self, state: OrderState) -> int:
        """The newest ``seq`` applied to ``state``."""
        return state.last_seq

    def apply(self, state: OrderState | None, event: LifecycleEvent) -> OrderState:
        """The order after ``event`` (see :func:`listeners.orders.status.next_state`)."""
        return next_state(state, event, self.rules)

    def write(
        self,
        session: Session,
        changed: Sequence[OrderState],
        applied: Sequence[LifecycleEvent],
    ) -> None:
        """Upsert the changed orders and insert the applied events, one statement each."""
        # One row per order even if two sagas share a business key: ON CONFLICT may not
        # touch a row twice in one statement.
        latest = {state.order_id: state for state in changed}
        order_of = {state.saga_id: state.order_id for state in changed}
        rows = [
            {name: getattr(state, name) for name in _STATE_COLUMNS} for state in latest.values()
        ]
        upsert = _insert(session, _ORDERS)
        upsert = upsert.on_conflict_do_update(
            index_elements=[_ORDERS.c.order_id],
            set_={
                name: upsert.excluded[name]
                for name in _STATE_COLUMNS
                if name not in {"order_id", "created_at"}
            },
            # A second writer (a rebalance in flight) never moves an order backwards.
            where=_ORDERS.c.last_seq < upsert.excluded.last_seq,
        )
        session.execute(upsert, rows)
        history = [
            {
                "saga_id": event.saga_id,
                "seq": event.seq,
                "order_id": order_of[event.saga_id],
                "type": event.type,
                "step": event.step,
                "service": event.service,
                "attempt": event.attempt,
                "error": describe_error(event),
                "occurred_at": utc(event.occurred_at),
            }
            for event in applied
        ]
        session.execute(_insert(session, _EVENTS).on_conflict_do_nothing(), history)

    def reset(self, session: Session) -> None:
        """Delete all orders and their history."""
        session.execute(delete(_EVENTS))
        session.execute(delete(_ORDERS))


def _insert(session: Session, table: Table) -> Any:
    """The dialect's ``INSERT`` construct, which has ``ON CONFLICT`` support."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise ListenerConfigError(
        f"order-status listener database dialect {dialect!r} is not supported; "
        "use a postgresql+psycopg:// or sqlite:/// LISTENER_DATABASE_URL"
    )
