"""The reference a listener's writes are compared with: the same handlers, ``session.add``
for a new saga and an ORM flush for a stored one, batch by batch."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from listeners import Listener, create_db_engine
from listeners._events import Event
from listeners._framework import apply_batch
from listeners._rows import STANDARD_COLUMNS
from tests.sqlcount import count_sql


def engines(
    request: pytest.FixtureRequest, tmp_path: Path, metadata: sa.MetaData
) -> Iterator[sa.Engine]:
    """An engine on a fresh PostgreSQL database or SQLite file (``request.param``)."""
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'listener.db'}"
    engine = create_db_engine(url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def setting(model: type[Any], sets: Mapping[tuple[str, int], Mapping[str, Any]]) -> Listener[Any]:
    """A listener of ``model`` whose one handler sets what ``sets`` says per (saga, seq)."""
    listener: Listener[Any] = Listener(model.__tablename__, model=model, saga_types={"booking"})

    @listener.on_any
    def fill(row: Any, event: Event) -> None:
        for attr, value in sets.get((event.saga_id, event.seq), {}).items():
            setattr(row, attr, value)

    return listener


def stored(
    engine: sa.Engine, table: sa.Table, instants: Collection[str] = ()
) -> list[tuple[Any, ...]]:
    """Every row as text, column by column (SQL ``NULL`` is ``None``; JSON null is ``'null'``).

    Columns in ``instants`` (the server's clock: differs per transaction) say only
    whether they are NULL.
    """
    columns = [
        col.is_(None) if col.key in instants else sa.cast(col, sa.Text) for col in table.columns
    ]
    with engine.connect() as conn:
        got = conn.execute(sa.select(*columns).order_by(table.c.saga_id))
        return [tuple(row) for row in got]


@dataclass
class ListenerRun:
    after: list[list[tuple[Any, ...]]] = field(default_factory=list)  # the table per batch
    statements: list[int] = field(default_factory=list)  # statements the server ran per batch
    now: list[Any] = field(default_factory=list)  # the server's now() in each batch


#: Called with the engine and a batch's number once it is committed (another writer).
Between = Callable[[sa.Engine, int], None]


def by_listener(
    engine: sa.Engine,
    listener: Listener[Any],
    batches: Sequence[Sequence[Event]],
    instants: Collection[str] = (),
    between: Between | None = None,
) -> ListenerRun:
    """The listener applies ``batches`` one by one (one transaction each)."""
    run = ListenerRun()
    for number, events in enumerate(batches):
        with count_sql(engine) as sql, Session(engine) as session, session.begin():
            apply_batch(session, listener, list(events))
            statements = sql.rows
            run.now.append(session.scalar(sa.select(sa.func.now())))
        if between is not None:
            between(engine, number)
        run.after.append(stored(engine, listener.table, instants))
        run.statements.append(statements)
    return run


def by_orm(
    engine: sa.Engine,
    listener: Listener[Any],
    batches: Sequence[Sequence[Event]],
    instants: Collection[str] = (),
    between: Between | None = None,
) -> list[list[tuple[Any, ...]]]:
    """The table after each batch written by the ORM, from an emptied table.

    One flush per batch, as the listener writes once per batch: a saga new in the batch
    is what the handlers made of its first event, with the attributes they set (or the
    framework did), given to ``session.add`` (its later events in the batch change that
    pending object); a stored saga's row is loaded by the session and changed by the
    handlers. The standard columns are marked changed (the framework writes them into
    ``__dict__``, unseen by the ORM).
    """
    with engine.begin() as conn:
        conn.execute(sa.delete(listener.table))
    attributes = set(listener.attributes)
    after = []
    for number, events in enumerate(batches):
        with Session(engine, autoflush=False) as session, session.begin():
            rows: dict[str, Any] = {}
            for event in events:
                row = rows.get(event.saga_id) or session.get(listener.model, event.saga_id)
                if row is None:
                    made = listener.apply(None, event)
                    given = {k: v for k, v in made.__dict__.items() if k in attributes}
                    row = rows[event.saga_id] = listener.model(**given)
                    session.add(row)
                    continue
                rows[event.saga_id] = row
                listener.apply(row, event)
                for attr in STANDARD_COLUMNS:
                    flag_modified(row, attr)
        if between is not None:
            between(engine, number)
        after.append(stored(engine, listener.table, instants))
    return after
