"""Alembic for listener databases: upgrade to head, and refuse to run behind it.

The migration scripts live in ``alembic/`` at the repository root (``alembic.ini``);
the database URL always comes from :class:`~listeners.settings.ListenerSettings` or the
caller, never from ``alembic.ini``.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from alembic import command
from listeners.errors import ListenerConfigError, SchemaNotAtHeadError

__all__ = [
    "MIGRATE_COMMAND",
    "alembic_config",
    "current_revisions",
    "head_revisions",
    "require_head",
    "upgrade",
]

#: What an operator runs to bring a listener database to head.
MIGRATE_COMMAND = "python -m listeners migrate"

_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def alembic_config(database_url: str, *, ini: Path = _INI) -> Config:
    """An Alembic config for the listener database at ``database_url``.

    Raises:
        ListenerConfigError: ``alembic.ini`` is not next to the ``listeners`` package.
    """
    if not ini.is_file():
        raise ListenerConfigError(
            f"alembic.ini not found at {ini}; run from a checkout of saga-coordinator "
            "(pip install -e .) so the migrations are available"
        )
    config = Config(str(ini))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "heads") -> None:
    """Upgrade the listener database at ``database_url`` to ``revision`` (default: head)."""
    command.upgrade(alembic_config(database_url), revision)


def head_revisions(database_url: str) -> frozenset[str]:
    """Revisions the migration scripts end at."""
    return frozenset(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())


def current_revisions(engine: sa.Engine) -> frozenset[str]:
    """Revisions the database at ``engine`` is at (empty for a fresh database)."""
    with engine.connect() as connection:
        return frozenset(MigrationContext.configure(connection).get_current_heads())


def require_head(engine: sa.Engine) -> None:
    """Raise unless the database at ``engine`` is migrated to head.

    Raises:
        SchemaNotAtHeadError: naming the command that migrates it.
    """
    url = engine.url.render_as_string(hide_password=False)
    heads = head_revisions(url)
    current = current_revisions(engine)
    if current != heads:
        shown = engine.url.render_as_string(hide_password=True)
        raise SchemaNotAtHeadError(
            f"listener database {shown} is at revision {sorted(current) or 'none (empty)'}, "
            f"not at head {sorted(heads)}; run `{MIGRATE_COMMAND}` with the same "
            "LISTENER_DATABASE_URL (or --database-url) first"
        )
