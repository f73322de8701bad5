"""Listener databases: Alembic builds exactly the modelled schema, and a batch costs a
handful of statements and one commit (counted at the driver, on PostgreSQL)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import JSON, LargeBinary, MetaData
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from examples.trips import Trip, trips
from listeners import (
    NAMING_CONVENTION,
    Listener,
    SagaRow,
    create_db_engine,
    session_factory,
)
from listeners._migrations import (
    current_revisions,
    head_revisions,
    require_head,
    schema_diff,
    upgrade,
)
from listeners._processor import commit_batch
from listeners._rows import utc
from listeners.orders import OrderStatusListener
from tests.listener_events import mixed_sagas
from tests.sqlcount import count_sql
from tests.trip_events import trip_saga

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'orders.db'}"
    return str(request.getfixturevalue("pg_url"))


def test_upgrade_head_yields_the_modelled_schema(empty_url: str) -> None:
    engine = create_db_engine(empty_url)
    try:
        with pytest.raises(Exception, match="python -m listeners migrate"):
            require_head(engine)
        upgrade(empty_url)
        require_head(engine)
        listener = OrderStatusListener()
        assert current_revisions(engine, listener) == head_revisions(listener)
        assert head_revisions(listener) == {"0002_orders_per_saga"}
        with engine.connect() as connection:
            tables = set(sa.inspect(connection).get_table_names())
        assert "alembic_version_orders" in tables and "alembic_version" not in tables
        assert schema_diff(engine, listener) == []
        upgrade(empty_url)  # idempotent
    finally:
        engine.dispose()


@pytest.mark.parametrize(("count", "batch"), [(1000, 200), (1600, 500)])
def test_statements_and_commits_per_batch_on_postgresql(
    pg_url: str, count: int, batch: int
) -> None:
    """The order listener on the listener API, counted at the driver."""
    upgrade(pg_url)
    engine = create_db_engine(pg_url)
    sessions = session_factory(engine)
    listener = OrderStatusListener()
    sagas = mixed_sagas(200)
    columns = zip(*(events for _, events in sagas.values()), strict=False)
    events = [e for row in columns for e in row][:count]
    touched = len({e.saga_id for e in events})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))  # open the pooled connection first
        with count_sql(engine) as sql:
            for start in range(0, len(events), batch):
                commit_batch(sessions, [listener], events[start : start + batch])
        batches = -(-len(events) // batch)
        print(
            f"\n{len(events)} order events ({touched} sagas) in {batches} batches of {batch}: "
            f"{sql.commits} commits, {sql.statements} statements {sql.kinds}, {sql.rows} "
            f"parameter rows = {sql.statements / touched:.3f} statements per saga, "
            f"{sql.statements / len(events):.4f} per event"
        )
        assert sql.commits == batches
        assert sql.statements == 3 * batches  # SELECT, upsert, timeline insert per batch
        # ... each ONE statement for the server, not one per row (arrays, not executemany)
        assert sql.rows == sql.statements
        assert sql.statements <= touched  # at most one statement per saga, amortized
        with sessions() as session:
            assert session.scalar(sa.text("select count(*) from order_events")) == len(events)
    finally:
        engine.dispose()


def _dump(engine: sa.Engine, table: sa.Table) -> list[tuple[Any, ...]]:
    """Every row of ``table``, datetimes as UTC, in key order."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table).order_by(*table.primary_key.columns)).all()
    return [tuple(utc(v) if isinstance(v, datetime) else v for v in row) for row in rows]


def _redelivered(events: list[Any]) -> list[list[Any]]:
    """Batches of ``events`` as a crash would redeliver them: overlapping, regrouped."""
    return [events[:300], events[150:700], events[650:], events[400:900]]


def test_postgresql_arrays_write_what_sqlite_executemany_writes(
    pg_url: str, tmp_path: Path
) -> None:
    """The array statements (PostgreSQL) and the executemany path (SQLite) agree, row for
    row, for a listener with columns of its own, under duplicates and regrouping."""
    orders = [e for _, events in mixed_sagas(60).values() for e in events]
    journeys = [
        e
        for i, outcome in enumerate(["completed", "hotel_failed", "in_flight"] * 20)
        for e in trip_saga(f"trip-saga-{i}", f"trip-{i % 7}", outcome)
    ]
    events = [e for pair in zip(orders, journeys, strict=False) for e in pair]
    listeners: list[Listener[Any]] = [OrderStatusListener(), trips]
    dumps = []
    for url in (pg_url, f"sqlite:///{tmp_path / 'same.db'}"):
        engine = create_db_engine(url)
        try:
            Trip.metadata.create_all(engine)
            OrderStatusListener().table.metadata.create_all(engine)
            sessions = session_factory(engine)
            for batch in _redelivered(events):
                commit_batch(sessions, listeners, batch)
            dumps.append(
                [_dump(engine, t) for item in listeners for t in (item.table, item.timeline)]
            )
        finally:
            engine.dispose()
    assert dumps[0] == dumps[1]
    assert all(dumps[0])


class _JsonBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class _Basket(SagaRow, _JsonBase):
    __tablename__ = "baskets"
    items: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class _Crate(SagaRow, _JsonBase):
    __tablename__ = "crates"
    label: Mapped[bytes | None] = mapped_column(LargeBinary)


_baskets = Listener("baskets", model=_Basket, saga_types={"order_fulfillment"})
_crates = Listener("crates", model=_Crate, saga_types={"order_fulfillment"})


@_baskets.on_start
def _filled(basket: _Basket, event: Any) -> None:
    basket.items = dict(event.data or {})


@_crates.on_start
def _labelled(crate: _Crate, event: Any) -> None:
    crate.label = event.saga_id.encode()


def test_a_json_column_goes_in_one_array_statement(pg_url: str) -> None:
    engine = create_db_engine(pg_url)
    try:
        _JsonBase.metadata.create_all(engine)
        events = [e for _, evs in mixed_sagas(10).values() for e in evs]
        with count_sql(engine) as sql:
            commit_batch(session_factory(engine), [_baskets], events)
        assert sql.rows == sql.statements == 3  # the SELECT, the upsert, the timeline
        with engine.connect() as conn:
            items = conn.execute(sa.select(_Basket.__table__.c["items"])).scalars().all()
        assert items == [{"items": 2}] * 10
    finally:
        engine.dispose()


def test_a_column_without_an_array_form_is_written_row_by_row(pg_url: str) -> None:
    """LargeBinary has no array form here: that table goes as an executemany, and is right."""
    engine = create_db_engine(pg_url)
    try:
        _JsonBase.metadata.create_all(engine)
        sagas = mixed_sagas(10)
        events = [e for _, evs in sagas.values() for e in evs]
        with count_sql(engine) as sql:
            commit_batch(session_factory(engine), [_crates], events)
        assert sql.rows > sql.statements  # the upsert went row by row
        with engine.connect() as conn:
            labels = conn.execute(sa.select(_Crate.__table__.c["label"])).scalars().all()
        assert sorted(labels) == sorted(saga.encode() for saga in sagas)
    finally:
        engine.dispose()
