"""The idempotent batch apply of the order-status listener, on in-memory SQLite."""

from __future__ import annotations

import random
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from listeners import BatchResult
from listeners._processor import commit_batch
from listeners.orders import Order, OrderEvent, OrderStatusListener, get_order, list_orders
from tests.listener_events import EXPECTED, OUTCOMES, mixed_sagas, order_saga
from tests.sqlcount import count_sql


def _apply(
    sessions: sessionmaker[Session], listener: OrderStatusListener, events: list[Any]
) -> BatchResult:
    return commit_batch(sessions, [listener], events)


def _orders(sessions: sessionmaker[Session]) -> dict[str, tuple[Any, ...]]:
    with sessions() as session:
        rows = session.execute(sa.select(Order.__table__)).all()
    return {row.order_id: tuple(row) for row in rows}


def test_each_outcome_ends_in_its_status(
    sessions: sessionmaker[Session], listener: OrderStatusListener
) -> None:
    for outcome in OUTCOMES:
        events = order_saga(f"s-{outcome}", outcome, order_id=f"o-{outcome}")
        assert _apply(sessions, listener, events).applied == len(events)
        with sessions() as session:
            order = get_order(session, f"o-{outcome}")
        want = EXPECTED[outcome]
        assert (order.status, order.current_service, order.current_step) == (
            want.status,
            want.current_service,
            want.current_step,
        ), outcome
        assert [e.seq for e in order.timeline] == list(range(1, len(events) + 1))
        assert order.last_seq == len(events)


def test_status_follows_each_step(
    sessions: sessionmaker[Session], listener: OrderStatusListener
) -> None:
    events = order_saga("s1", "completed", order_id="o1")
    seen = []
    for event in events:
        _apply(sessions, listener, [event])
        with sessions() as session:
            seen.append(get_order(session, "o1").status)
    # started, then (started, succeeded) per step, then completed
    assert seen == [
        "pending",
        *["pending", "pending"],
        *["pending", "inventory_reserved"],
        *["inventory_reserved", "paid"],
        *["paid", "shipped"],
        *["shipped", "shipped"],
        "completed",
    ]


def test_compensation_passes_through_cancelling(
    sessions: sessionmaker[Session], listener: OrderStatusListener
) -> None:
    events = order_saga("s1", "payment_declined", order_id="o1")
    compensating = next(i for i, e in enumerate(events) if e.type == "saga_compensating")
    _apply(sessions, listener, events[: compensating + 2])
    with sessions() as session:
        order = get_order(session, "o1")
    assert order.status == "cancelling"
    assert (order.current_service, order.current_step) == ("inventory", "release_inventory")
    assert order.last_error == "CardDeclined: charge_payment failed"


def test_duplicates_and_replays_change_nothing(
    sessions: sessionmaker[Session], listener: OrderStatusListener
) -> None:
    sagas = mixed_sagas(30)
    everything = [e for _, events in sagas.values() for e in events]
    first = _apply(sessions, listener, everything)
    assert first == BatchResult(applied=len(everything))
    before = _orders(sessions)
    # The same events again, and each twice within one batch: all stale.
    again = _apply(sessions, listener, everything + everything)
    assert again == BatchResult(applied=0, stale=2 * len(everything))
    assert _orders(sessions) == before
    with sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(OrderEvent)) == len(everything)


def test_out_of_order_events_never_move_state_backwards(
    sessions: sessionmaker[Session], listener: OrderStatusListener
) -> None:
    events = order_saga("s1", "completed", order_id="o1")
    _apply(sessions, listener, events[-1:])  # saga_completed (seq 12) first
    late = _apply(sessions, listener, events[:-1])
    assert late == BatchResult(stale=len(events) - 1)
    with sessions() as session:
        order = get_order(session, "o1")
    assert (order.status, order.last_seq) == ("completed", 12)


def test_batch_order_within_a_batch_does_not_matter(
    sessions: sessionmaker[Session], listener: OrderStatusListener
) -> None:
    sagas = mixed_sagas(24)
    everything = [e for _, events in sagas.values() for e in events]
    shuffled = list(everything)
    random.Random(7).shuffle(shuffled)
    _apply(sessions, listener, shuffled)
    for saga_id, (outcome, _) in sagas.items():
        with sessions() as session:
            order = get_order(session, "order-" + saga_id.rsplit("-", 1)[1])
        assert order.status == EXPECTED[outcome].status, saga_id


def test_order_id_falls_back_to_saga_id(
    sessions: sessionmaker[Session], listener: OrderStatusListener
) -> None:
    _apply(sessions, listener, order_saga("s-no-key", "completed"))
    with sessions() as session:
        assert get_order(session, "s-no-key").status == "completed"


def test_other_saga_types_are_ignored(
    sessions: sessionmaker[Session], listener: OrderStatusListener, engine: sa.Engine
) -> None:
    events = [e.model_copy(update={"saga_type": "refund"}) for e in order_saga("s", "completed")]
    with count_sql(engine) as sql:
        result = _apply(sessions, listener, events)
    assert result == BatchResult(ignored=len(events))
    assert sql.statements == 0  # nothing handled: no transaction at all
    assert _orders(sessions) == {}


def test_status_mapping_is_configurable(sessions: sessionmaker[Session]) -> None:
    listener = OrderStatusListener(
        saga_types={"order_fulfillment"},
        status_by_step={"create_order": "pending", "charge_payment": "paid"},
    )
    events = order_saga("s1", "in_flight", order_id="o1")
    _apply(sessions, listener, events[:6])  # up to reserve_inventory succeeded
    with sessions() as session:
        assert get_order(session, "o1").status == "pending"


def test_one_commit_and_few_statements_per_batch(
    sessions: sessionmaker[Session], listener: OrderStatusListener, engine: sa.Engine
) -> None:
    sagas = mixed_sagas(100)
    everything = [e for _, events in sagas.values() for e in events]
    with count_sql(engine) as sql:
        for start in range(0, len(everything), 250):
            _apply(sessions, listener, everything[start : start + 250])
    batches = -(-len(everything) // 250)
    assert sql.commits == batches
    # SELECT orders, upsert orders, insert history: three statements per batch.
    assert sql.statements == 3 * batches, sql.kinds
    assert sql.rows <= 2 * len(everything) + batches


def test_list_orders_by_status(
    sessions: sessionmaker[Session], listener: OrderStatusListener
) -> None:
    sagas = mixed_sagas(60)
    _apply(sessions, listener, [e for _, events in sagas.values() for e in events])
    with sessions() as session:
        cancelled = list_orders(session, "cancelled", limit=1000)
        two = list_orders(session, "completed", limit=2)
    want = sum(1 for outcome, _ in sagas.values() if EXPECTED[outcome].status == "cancelled")
    assert len(cancelled) == want
    assert {o.status for o in cancelled} == {"cancelled"}
    assert len(two) == 2
    assert two[0].updated_at >= two[1].updated_at
