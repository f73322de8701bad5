"""Listener databases: Alembic builds exactly the modelled schema, and a batch costs a
handful of statements and one commit (counted at the driver, on PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from listeners import create_db_engine, session_factory
from listeners._migrations import (
    current_revisions,
    head_revisions,
    require_head,
    schema_diff,
    upgrade,
)
from listeners._processor import commit_batch
from listeners.orders import OrderStatusListener
from tests.listener_events import mixed_sagas
from tests.sqlcount import count_sql

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
        assert sql.statements <= touched  # at most one statement per saga, amortized
        with sessions() as session:
            assert session.scalar(sa.text("select count(*) from order_events")) == len(events)
    finally:
        engine.dispose()
