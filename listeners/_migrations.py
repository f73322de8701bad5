"""Alembic per listener: upgrade to head, refuse to run behind it, write new revisions.

Each listener owns its migration history (``listener.migrations``, a directory inside
its package, so it ships in the wheel) and its version table
(``alembic_version_{name}``), so several listeners can share one database and still
migrate independently. The Alembic environment itself is ``listeners/_alembic``. The
database URL always comes from the caller, never from a config file.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from listeners._databases import held_listeners
from listeners._db import (
    create_db_engine,
    hide_password,
    lacks_schema,
    migrate_command,
    migration_fix,
)
from listeners._declarative import Listener
from listeners._errors import ListenerConfigError, SchemaLagsModelError, SchemaNotAtHeadError
from listeners._registry import BUILTIN, cli_name

__all__ = [
    "MIGRATE_COMMAND",
    "alembic_config",
    "current_revisions",
    "head_revisions",
    "require_head",
    "revision",
    "schema_diff",
    "upgrade",
]

#: What an operator runs to bring a listener database to head.
MIGRATE_COMMAND = "python -m listeners migrate"

_ENV = Path(__file__).resolve().parent / "_alembic"


def _default() -> list[Listener[Any]]:
    from listeners.orders._listener import OrderStatusListener

    return [OrderStatusListener()]


def alembic_config(listener: Listener[Any], database_url: str) -> Config:
    """An Alembic config for ``listener``'s history in the database at ``database_url``."""
    config = Config()
    config.set_main_option("script_location", str(_ENV))
    config.set_main_option("version_locations", str(listener.migrations))
    config.set_main_option("path_separator", "os")
    config.attributes["database_url"] = database_url
    config.attributes["listener"] = listener
    return config


def _script(listener: Listener[Any]) -> ScriptDirectory:
    if not listener.migrations.is_dir():
        raise ListenerConfigError(
            f"listener {listener.name!r} has no migrations directory {listener.migrations}; "
            "create it and run "
            f"`{shlex.join(['python', '-m', 'listeners', 'revision', cli_name(listener)])} "
            "-m 'first schema' --database-url URL` (URL: a database the listener may use)"
        )
    return ScriptDirectory.from_config(alembic_config(listener, "sqlite://"))


def upgrade(
    database_url: str,
    listeners: Sequence[Listener[Any]] | None = None,
    revision: str = "heads",
    *,
    rebuilt: str | None = None,
    swap: bool = True,
) -> None:
    """Upgrade each listener's tables at ``database_url`` (default: the order listener).

    ``listeners`` are those whose tables the database holds, as far as known. ``rebuilt``:
    the database a replay is building ``database_url`` to replace (default: itself);
    ``swap``: whether that replay swaps (its quoted rerun keeps ``--no-swap``).

    Raises:
        SchemaNotAtHeadError: the database is at a revision a listener's migrations lack
            (was: Alembic's "Can't locate revision", a traceback).
        SchemaLagsModelError: a revision found a table or column missing, naming the
            commands that fix it: the database is rebuilt (``replay`` of ``listeners``),
            after the revisions are fixed if a fresh database fails the same way.
    """
    listeners = list(listeners) if listeners is not None else _default()
    for listener in listeners:
        _script(listener)  # a listener without migrations: said before any database is asked
        current = _current(database_url, listener)
        if foreign := _foreign(listener, current, hide_password(database_url)):
            raise SchemaNotAtHeadError(foreign)
        fresh = not current
        try:
            command.upgrade(alembic_config(listener, database_url), revision)
        except SQLAlchemyError as exc:
            if not lacks_schema(exc):
                raise
            shown = hide_password(database_url)
            named = [cli_name(item) for item in listeners]
            held = held_listeners(rebuilt or database_url) - {item.name for item in listeners}
            fix = migration_fix(
                hide_password(rebuilt or database_url),
                rebuild=[*named, *sorted(held & BUILTIN.keys())],
                fresh=fresh,
                revisions=listener.migrations,
                replaying=rebuilt is not None,
                unnamed=sorted(held - BUILTIN.keys()),
                swap=swap,
            )
            first = str(exc).splitlines()[0]
            if isinstance(exc, NoSuchTableError):  # reflected (batch mode): only its name
                first = f"table {first} does not exist"
            raise SchemaLagsModelError(
                f"listener {listener.name!r}: migrating database {shown} failed: {first}; {fix}"
            ) from exc


def _current(database_url: str, listener: Listener[Any]) -> frozenset[str]:
    """The revisions of ``listener`` the database at ``database_url`` is at."""
    engine = create_db_engine(database_url)
    try:
        return current_revisions(engine, listener)
    finally:
        engine.dispose()


def _foreign(listener: Listener[Any], current: frozenset[str], shown: str) -> str:
    """Why ``migrate`` cannot help a database at revisions ``listener`` lacks ("": none)."""
    unknown = current - {script.revision for script in _script(listener).walk_revisions()}
    if not unknown:
        return ""
    return (
        f"listener {listener.name!r}: database {shown} is at revision {sorted(unknown)}, "
        f"which its migrations ({listener.migrations}) do not have: a newer release of the "
        f"listener migrated it (run that release), or its version table "
        f"{listener.version_table} was changed by hand; migrate cannot move it"
    )


def head_revisions(listener: Listener[Any] | None = None) -> frozenset[str]:
    """Revisions ``listener``'s history ends at."""
    return frozenset(_script(listener or _default()[0]).get_heads())


def current_revisions(engine: sa.Engine, listener: Listener[Any] | None = None) -> frozenset[str]:
    """Revisions ``listener``'s tables at ``engine`` are at (empty for a fresh database)."""
    listener = listener or _default()[0]
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": listener.version_table}
        )
        return frozenset(context.get_current_heads())


def require_head(engine: sa.Engine, listeners: Sequence[Listener[Any]] | None = None) -> None:
    """Raise unless every listener's tables at ``engine`` are migrated to head.

    Raises:
        SchemaNotAtHeadError: naming each listener not at head and the exact ``migrate``
            of them all (as ``python -m listeners`` names them, the URL's password hidden);
            or, at a revision its migrations lack (migrate cannot help), saying so.
    """
    behind = [
        (listener, current)
        for listener in (listeners if listeners is not None else _default())
        if (current := current_revisions(engine, listener)) != head_revisions(listener)
    ]
    shown = hide_password(engine.url)
    if foreign := "; ".join(filter(None, (_foreign(item, now, shown) for item, now in behind))):
        raise SchemaNotAtHeadError(foreign)
    if behind:
        at = "; ".join(
            f"listener {listener.name!r}: database {shown} is at revision "
            f"{sorted(current) or 'none (empty)'}, not at head {sorted(head_revisions(listener))}"
            for listener, current in behind
        )
        command = migrate_command([cli_name(listener) for listener, _ in behind], shown)
        raise SchemaNotAtHeadError(f"{at}; run {command} first")


def schema_diff(engine: sa.Engine, listener: Listener[Any]) -> list[Any]:
    """Differences between ``listener``'s model and its tables at ``engine`` (``[]``: none).

    What ``revision`` would autogenerate; a test that it is empty after ``upgrade``
    proves the migrations build exactly the model.
    """
    from alembic.autogenerate import compare_metadata

    own = {listener.table.name, listener.timeline.name}

    def include(obj: Any, name: str | None, kind: str, reflected: bool, other: Any) -> bool:
        table = name if kind == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table is None or table in own

    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"version_table": listener.version_table, "include_object": include},
        )
        return list(compare_metadata(context, listener.table.metadata))


def revision(
    listener: Listener[Any], database_url: str, message: str, *, autogenerate: bool = True
) -> str:
    """Write a new revision of ``listener``'s history (autogenerated from its model).

    The database at ``database_url`` must be at head: autogenerate compares against it.
    Returns the path of the new file.

    Raises:
        SchemaNotAtHeadError: autogenerating against a database not at head, naming the
            ``migrate`` that brings it there (was: Alembic's "Target database is not up
            to date", a traceback).
    """
    listener.migrations.mkdir(parents=True, exist_ok=True)
    init = listener.migrations / "__init__.py"
    if not init.exists():  # a package, so the revisions ship in the wheel
        init.write_text(f'"""Alembic revisions of the {listener.name} listener."""\n')
    if autogenerate:  # Alembic compares the model with the database: at head only
        engine = create_db_engine(database_url)
        try:
            require_head(engine, [listener])
        finally:
            engine.dispose()
    config = alembic_config(listener, database_url)
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    written = command.revision(
        config, message=message, autogenerate=autogenerate, version_path=str(listener.migrations)
    )
    scripts = written if isinstance(written, list) else [written]
    return str(scripts[0].path) if scripts and scripts[0] is not None else ""
