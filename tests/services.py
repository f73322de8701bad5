"""Session services for tests: a real Kafka broker and a real PostgreSQL.

Under ``CI=true`` a missing service is a test failure; elsewhere it is a visible skip.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from infra import kafka
from infra.processes import ROOT

DEFAULT_PG = "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"


def unavailable(what: str) -> None:
    """Fail under CI, skip (visibly, with the reason) elsewhere."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{what} (CI=true: a missing service is a failure)", pytrace=False)
    pytest.skip(what)


class KafkaService:
    def __init__(self) -> None:
        self.bootstrap: str | None = None
        self.started_by_us = False
        self.error: str | None = None

    def start(self) -> None:
        try:
            self.bootstrap, self.started_by_us = kafka.up()
        except kafka.KafkaProvisionError as exc:
            self.error = str(exc)

    def stop(self) -> None:
        if self.started_by_us:
            kafka.down()


def postgres_base_url() -> str:
    return os.environ.get("DATABASE_URL", DEFAULT_PG)


def postgres_reachable(url: str) -> str | None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    finally:
        engine.dispose()


def ensure_postgres() -> str:
    url = postgres_base_url()
    if postgres_reachable(url) is None:
        return url
    if "DATABASE_URL" not in os.environ:
        subprocess.run(["bash", str(ROOT / "infra" / "postgres-up.sh")], check=False)
    error = postgres_reachable(url)
    if error is not None:
        unavailable(
            f"PostgreSQL is not reachable at {url} ({error}); "
            "run `bash infra/postgres-up.sh` or set DATABASE_URL"
        )
    return url


def fresh_database(base_url: str) -> Iterator[str]:
    """Create an isolated database on the server, yield its URL, drop it afterwards."""
    import sqlalchemy as sa

    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
