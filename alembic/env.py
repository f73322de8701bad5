"""Alembic environment of the listener databases.

The URL comes from the caller (``config.attributes["database_url"]``, set by
``listeners.migrations``) or else from ``ListenerSettings`` (``LISTENER_DATABASE_URL``),
never from alembic.ini.
"""

from __future__ import annotations

from logging.config import fileConfig

import sqlalchemy as sa

from alembic import context
from listeners.orders.models import metadata
from listeners.settings import ListenerSettings

config = context.config
if config.config_file_name is not None and not config.attributes.get("database_url"):
    # Only when run as the `alembic` command: do not reconfigure a host's logging.
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = metadata


def database_url() -> str:
    url = config.attributes.get("database_url")
    return str(url) if url else ListenerSettings().database_url


def run_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = sa.create_engine(database_url(), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
