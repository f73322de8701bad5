"""Listener databases: Alembic builds exactly the modelled schema, and a batch costs a
handful of statements and one commit (counted at the driver, on PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from listeners.db import create_db_engine, session_factory
from listeners.migrations import current_revisions, head_revisions, require_head, upgrade
from listeners.orders import OrderStatusListener, metadata
from listeners.processor import commit_batch
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
        assert current_revisions(engine) == head_revisions(empty_url) == {"0001_orders"}
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), metadata)
        assert diff == []
        upgrade(empty_url)  # idempotent
    finally:
        engine.dispose()


def test_statements_and_commits_per_batch_on_postgresql(pg_url: str) -> None:
    upgrade(pg_url)
    engine = create_db_engine(pg_url)
    sessions = session_factory(engine)
    listener = OrderStatusListener()
    sagas = mixed_sagas(200)
    columns = zip(*(events for _, events in sagas.values()), strict=False)
    events = [e for row in columns for e in row]
    batch = 500
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))  # open the pooled connection first
        with count_sql(engine) as sql:
            for start in range(0, len(events), batch):
                commit_batch(sessions, [listener], events[start : start + batch])
        batches = -(-len(events) // batch)
        per_event = sql.statements / len(events)
        print(
            f"\n{len(events)} events in {batches} batches of {batch}: {sql.statements} statements "
            f"({sql.kinds}), {sql.rows} parameter rows, {sql.commits} commits; "
            f"{per_event:.4f} statements/event vs 3 for row-by-row read-modify-write"
        )
        assert sql.commits == batches
        assert sql.statements <= 3 * batches
        assert per_event < 0.05
        with sessions() as session:
            count = session.scalar(sa.text("select count(*) from order_events"))
        assert count == len(events)
    finally:
        engine.dispose()
