"""Fresh databases next to a live one, and swapping them in without wiping anything.

SQLite: files in the live file's directory, swapped with ``os.replace`` (the live file
and its ``-wal``/``-shm`` companions move aside first). PostgreSQL: databases on the
live one's server, swapped with ``ALTER DATABASE ... RENAME`` (which PostgreSQL refuses
while anyone is connected to either).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from listeners._declarative import Listener
from listeners._errors import ReplayError

__all__ = ["drop_database", "fresh_database", "held_listeners", "is_fresh", "swap_databases"]

_VERSION_TABLE = "alembic_version_"


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")


def _sqlite_path(url: sa.URL) -> Path:
    if url.database in (None, "", ":memory:"):
        raise ReplayError(
            "an in-memory SQLite database cannot be replayed into or swapped; use a file "
            "(sqlite:///path/listeners.db) or PostgreSQL"
        )
    return Path(str(url.database)).resolve()


def _maintenance(url: sa.URL) -> sa.Engine:
    return sa.create_engine(
        url.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )


def fresh_database(live: str) -> str:
    """Create an empty database next to ``live``; returns its URL."""
    url = sa.make_url(live)
    backend = url.get_backend_name()
    if backend == "sqlite":
        path = _sqlite_path(url)
        fresh = path.with_name(f"{path.stem}.replay-{_stamp()}{path.suffix or '.db'}")
        return url.set(database=str(fresh)).render_as_string(hide_password=False)
    if backend == "postgresql":
        name = f"{(url.database or 'listeners')[:24]}_replay_{_stamp()}"
        engine = _maintenance(url)
        try:
            with engine.connect() as connection:
                connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return url.set(database=name).render_as_string(hide_password=False)
    raise ReplayError(f"cannot create a fresh {backend} database; pass --into URL")


def drop_database(url: str) -> None:
    """Delete the database at ``url`` (a replay's unfinished build, never a live one)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_path(parsed)
        for name in (str(path), f"{path}-wal", f"{path}-shm"):
            Path(name).unlink(missing_ok=True)
        return
    engine = _maintenance(parsed)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{parsed.database}"'))
    finally:
        engine.dispose()


def is_fresh(target: str, listeners: Sequence[Listener[Any]]) -> bool:
    """Whether ``target`` holds none of the listeners' tables or version tables."""
    url = sa.make_url(target)
    if url.get_backend_name() == "sqlite" and not _sqlite_path(url).exists():
        return True
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        present = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    ours = {
        name
        for listener in listeners
        for name in (listener.table.name, listener.timeline.name, listener.version_table)
    }
    return not present & ours


def held_listeners(database: str) -> set[str]:
    """Names of the listeners whose version table (``alembic_version_{name}``) ``database`` holds.

    The database's own record of whose tables it holds (a replay's swap moves them all).
    """
    url = sa.make_url(database)
    if url.get_backend_name() == "sqlite" and (
        url.database in (None, "", ":memory:") or not Path(url.database).exists()
    ):
        return set()  # nothing is held yet (a new engine of memory: nothing ever)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        present = sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    return {
        name.removeprefix(_VERSION_TABLE) for name in present if name.startswith(_VERSION_TABLE)
    }


def swap_databases(*, live: str, fresh: str) -> str:
    """Give ``fresh`` the live name; the live database is kept under a new name (returned)."""
    live_url, fresh_url = sa.make_url(live), sa.make_url(fresh)
    if live_url.get_backend_name() == "sqlite":
        path, built = _sqlite_path(live_url), _sqlite_path(fresh_url)
        previous = path.with_name(f"{path.stem}.before-replay-{_stamp()}{path.suffix}")
        if path.exists():
            os.replace(path, previous)
            for companion in ("-wal", "-shm"):
                side = Path(f"{path}{companion}")
                if side.exists():
                    os.replace(side, Path(f"{previous}{companion}"))
        os.replace(built, path)
        return live_url.set(database=str(previous)).render_as_string(hide_password=False)
    if live_url.get_backend_name() != "postgresql" or fresh_url.get_backend_name() != "postgresql":
        raise ReplayError("swap needs both databases on SQLite or both on PostgreSQL")
    previous_name = f"{(live_url.database or 'listeners')[:24]}_before_replay_{_stamp()}"
    engine = _maintenance(live_url)
    try:
        with engine.connect() as connection:
            try:
                connection.execute(
                    sa.text(f'ALTER DATABASE "{live_url.database}" RENAME TO "{previous_name}"')
                )
            except sa.exc.DBAPIError as exc:
                raise ReplayError(
                    f"cannot rename the live database {live_url.database!r} ({exc.orig}); "
                    f"close every connection to it (listener workers, query tools) and swap "
                    f"by hand, or point LISTENER_DATABASE_URL at {fresh_url.database!r}"
                ) from exc
            connection.execute(
                sa.text(f'ALTER DATABASE "{fresh_url.database}" RENAME TO "{live_url.database}"')
            )
    finally:
        engine.dispose()
    return live_url.set(database=previous_name).render_as_string(hide_password=False)
