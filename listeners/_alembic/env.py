"""Alembic environment shared by every listener (shipped inside the package).

``listeners._migrations`` runs it with ``config.attributes`` holding the database URL and
the listener: its metadata (for autogenerate), its tables (other tables in the same
database or metadata belong to other listeners and are left alone) and its own version
table ``alembic_version_{name}``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context

config = context.config
listener: Any = config.attributes["listener"]
database_url: str = config.attributes["database_url"]
own_tables = {listener.table.name, listener.timeline.name}


def include_object(obj: Any, name: str | None, kind: str, reflected: bool, other: Any) -> bool:
    if kind == "table":
        return name in own_tables
    table = getattr(obj, "table", None)
    return table is None or table.name in own_tables


options: dict[str, Any] = {
    "target_metadata": listener.table.metadata,
    "version_table": listener.version_table,
    "include_object": include_object,
}

if context.is_offline_mode():
    context.configure(url=database_url, literal_binds=True, render_as_batch=True, **options)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                render_as_batch=connection.dialect.name == "sqlite",
                **options,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()
