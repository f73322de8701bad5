"""A listener database lacking a table or column of the model is not an outage.

On SQLite as on PostgreSQL, the batch is isolated and its events become dead letters
whose reason names the table or column and the fix (was, on SQLite: sqlite3 raises
"no such column" as ``OperationalError``, taken for an outage and retried for ever, the
listener stalled). SQLite's outages (a locked database, a file it cannot open) are still
retried in place, and the batch is applied once they end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import MetaData, String, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coordinator.events import DeadLetter
from listeners import NAMING_CONVENTION, Listener, SagaRow, create_db_engine, session_factory
from listeners._decoding import RawRecord
from listeners._events import Event
from listeners._processor import BatchProcessor
from tests.integration.test_listener_bulk_values import _event
from tests.unit.listeners.test_processor import _names_the_commands

pytestmark = pytest.mark.integration


class _Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class _Flight(SagaRow, _Base):
    __tablename__ = "flights"
    code: Mapped[str | None] = mapped_column(String(10))


_LISTENER = Listener("flights", model=_Flight, saga_types={"booking"})


@_LISTENER.on_start
def _booked(flight: _Flight, event: Event) -> None:
    flight.code = "F1"


_RECORDS = [
    RawRecord("t.lifecycle", 0, offset, e.saga_id.encode(), e.to_json())
    for offset, e in enumerate([_event("s0"), _event("s1")])
]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'flights.db'}"
    return str(request.getfixturevalue("pg_url"))


def _processor(engine: sa.Engine, letters: list[DeadLetter]) -> BatchProcessor:
    async def sink(letter: DeadLetter) -> None:
        letters.append(letter)

    return BatchProcessor(
        listeners=[_LISTENER],
        sessions=session_factory(engine),
        dead_letters=sink,
        agent="test.schema",
        max_delay=timedelta(milliseconds=20),
    )


async def _process(processor: BatchProcessor, records: Sequence[RawRecord]) -> Any:
    # A bound, not a timing: without it a batch retried for ever would hang the test.
    return await asyncio.wait_for(processor.process(records), timeout=60)


@pytest.mark.parametrize(
    ("drop", "named"),
    [
        ("ALTER TABLE flights DROP COLUMN code", "code"),  # the SELECT reads it
        ("DROP TABLE flights_timeline", "flights_timeline"),
        ("ALTER TABLE flights_timeline DROP COLUMN service", "service"),  # the INSERT
    ],
    ids=["model-column", "timeline-table", "timeline-column"],
)
async def test_a_table_or_column_the_database_lacks_dead_letters_the_batch(
    url: str, drop: str, named: str
) -> None:
    engine = create_db_engine(url)
    _Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(drop))
    letters: list[DeadLetter] = []
    processor = _processor(engine, letters)
    result = await _process(processor, _RECORDS)
    shown = engine.url.render_as_string(hide_password=True)
    engine.dispose()
    assert (result.applied, processor.stats.db_retries, processor.stats.isolated_batches) == (
        0,
        0,
        1,
    )
    assert [letter.key for letter in letters] == ["s0", "s1"]
    for letter in letters:
        assert named in letter.reason, letter.reason
        # a listener built in code has no name `python -m listeners` knows: LISTENER
        _names_the_commands(letter.reason, "LISTENER", shown)
        # PostgreSQL's test URL has a password: the commands cannot run as quoted
        assert ("*** stands for the database's password" in letter.reason) == (":***@" in shown)


async def test_a_locked_sqlite_database_is_retried_until_it_is_free(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'flights.db'}")
    _Base.metadata.create_all(engine)

    @event.listens_for(engine, "connect")
    def no_wait(dbapi_connection: Any, _record: Any) -> None:  # "database is locked" at once
        dbapi_connection.execute("PRAGMA busy_timeout=0")

    holder = engine.raw_connection()
    holder.driver_connection.execute("BEGIN EXCLUSIVE")  # type: ignore[union-attr]
    letters: list[DeadLetter] = []
    processor = _processor(engine, letters)
    batch = asyncio.ensure_future(_process(processor, _RECORDS))
    while processor.stats.db_retries < 2 and not batch.done():
        await asyncio.sleep(0.01)
    holder.driver_connection.execute("ROLLBACK")  # type: ignore[union-attr]
    holder.close()
    result = await batch
    engine.dispose()
    assert result.applied == 2 and letters == []
    assert processor.stats.db_retries >= 2 and processor.stats.isolated_batches == 0


async def test_a_sqlite_file_that_cannot_be_opened_is_retried_until_it_can(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'later' / 'flights.db'}"  # its directory does not exist
    engine = create_db_engine(url)
    letters: list[DeadLetter] = []
    processor = _processor(engine, letters)
    batch = asyncio.ensure_future(_process(processor, _RECORDS))
    while processor.stats.db_retries < 2 and not batch.done():
        await asyncio.sleep(0.01)
    # The database appears whole (an empty file would lack the tables: not an outage).
    ready = create_db_engine(f"sqlite:///{tmp_path / 'ready' / 'flights.db'}")
    (tmp_path / "ready").mkdir()
    _Base.metadata.create_all(ready)
    ready.dispose()
    (tmp_path / "ready").rename(tmp_path / "later")
    result = await batch
    engine.dispose()
    assert result.applied == 2 and letters == []
    assert processor.stats.db_retries >= 2 and processor.stats.isolated_batches == 0
