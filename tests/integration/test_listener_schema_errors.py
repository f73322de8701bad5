"""A listener database lacking a table or column of the model is not an outage.

On SQLite as on PostgreSQL, the batch is isolated and its events become dead letters
whose reason names the table or column and the fix (was, on SQLite: sqlite3 raises
"no such column" as ``OperationalError``, taken for an outage and retried for ever, the
listener stalled). SQLite's outages (a locked database, a file it cannot open) are still
retried in place, and the batch is applied once they end.

Every command that finds its database's schema out of date (a worker or a query on a
database behind, `revision` against one, `migrate` of a database changed outside its
revisions, `migrate` or `replay` of revisions that fail on a fresh database) quotes
the exact commands that fix it: the listeners as the CLI names them, the database's
URL (its password hidden, and said to be), each taken as it is by the CLI's parser.
"""

from __future__ import annotations

import asyncio
import uuid
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
from listeners._cli import main
from listeners._decoding import RawRecord
from listeners._errors import ReplayError, SchemaLagsModelError
from listeners._events import Event
from listeners._migrations import require_head, upgrade
from listeners._processor import BatchProcessor
from listeners._registry import load_listener
from listeners._replay import replay
from listeners._settings import ListenerSettings
from tests.integration.listener_kit import create_topic
from tests.integration.test_listener_bulk_values import _event
from tests.unit.listeners.test_processor import _names_the_commands, quoted_commands

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


_LISTENERS = ["python", "-m", "listeners"]


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    """``python -m listeners ARGS`` in this process: (exit code, its error output)."""
    monkeypatch.delenv("LISTENER_DATABASE_URL", raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # none of these reaches one
    code = main(list(args))
    return code, capsys.readouterr().err


def _shown(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


def _hidden_said(err: str, url: str) -> bool:
    """Whether ``err`` says *** is the password exactly when ``url`` has one."""
    said = "(*** stands for the database's password, not shown: put it back)" in err
    return said == (":***@" in _shown(url))


def _runnable(command: list[str], url: str) -> list[str]:
    """``command`` with the password put back (as the message says to)."""
    return [url if arg == _shown(url) else arg for arg in command]


def test_a_worker_on_a_database_behind_names_the_exact_migrate_of_its_listeners(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: run `python -m listeners migrate` "with the same listeners and database URL"."""
    monkeypatch.setenv("LISTENER_DATABASE_URLS", f'{{"orders": "{url}", "trips": "{url}"}}')
    code, err = _cli(monkeypatch, capsys, "worker", "orders", "examples.trips:trips")
    assert code == 2, err
    migrate = [*_LISTENERS, "migrate", "orders", "examples.trips:trips"]
    assert quoted_commands(err) == [[*migrate, "--database-url", _shown(url)]], err
    assert _hidden_said(err, url), err
    code, _ = _cli(monkeypatch, capsys, *_runnable(quoted_commands(err)[0], url)[3:])
    assert code == 0
    engine = create_db_engine(url)
    try:  # what the worker checks before it starts
        require_head(engine, [load_listener("orders"), load_listener("examples.trips:trips")])
    finally:
        engine.dispose()


def test_revision_against_a_database_behind_names_the_exact_migrate(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: Alembic's "Target database is not up to date." as a traceback, exit 1."""
    trips = "examples.trips:trips"
    code, err = _cli(monkeypatch, capsys, "revision", trips, "-m", "x", "--database-url", url)
    assert code == 2, err
    migrate = [*_LISTENERS, "migrate", trips, "--database-url", _shown(url)]
    assert quoted_commands(err) == [migrate], err
    assert _hidden_said(err, url), err


def test_migrate_of_a_database_changed_outside_its_revisions_names_the_replay(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Orders at its first revision, its table dropped by hand: its next revision fails.

    The fix rebuilds the database with every listener of it (was: `revision LISTENER`
    and `migrate LISTENER --database-url URL`, placeholders, and a revision, which
    cannot help: migrate runs the failing one first; on a reflected table, exit 1 with
    "listener database failed: orders" and no fix at all).
    """
    orders, trips = load_listener("orders"), load_listener("examples.trips:trips")
    upgrade(url, [orders], "0001_orders")
    upgrade(url, [trips])
    engine = create_db_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE orders"))
    engine.dispose()
    code, err = _cli(
        monkeypatch, capsys, "migrate", "orders", "examples.trips:trips", "--database-url", url
    )
    assert code == 2, err
    assert "table orders does not exist" in err and "listeners revision" not in err, err
    replay = [*_LISTENERS, "replay", "orders", "examples.trips:trips"]
    assert quoted_commands(err) == [[*replay, "--database-url", _shown(url)]], err
    assert _hidden_said(err, url), err


_BROKEN = {
    "__init__.py": """
from pathlib import Path

from listeners import Listener
from tests.integration.test_listener_schema_errors import _Flight

cabs = Listener(
    "cabs", model=_Flight, saga_types={"cab"}, migrations=Path(__file__).parent / "migrations"
)
""",
    "migrations/__init__.py": "",
    "migrations/0001_cabs.py": """
import sqlalchemy as sa
from alembic import op

revision = "0001_cabs"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:  # a table no revision creates
    op.add_column("cabs", sa.Column("plate", sa.String(10)))
""",
}


def _broken_listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A listener whose only revision alters a table no revision creates: its spec and
    migrations directory."""
    package = f"cabs_{uuid.uuid4().hex[:8]}"
    for name, text in _BROKEN.items():
        (tmp_path / package / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / package / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{package}:cabs", (tmp_path / package / "migrations").resolve()


def test_migrate_of_revisions_that_fail_on_a_fresh_database_names_them_and_migrate(
    url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Was: `revision LISTENER ...`, `migrate LISTENER --database-url URL`."""
    spec, revisions = _broken_listener(tmp_path, monkeypatch)
    code, err = _cli(monkeypatch, capsys, "migrate", "orders", spec, "--database-url", url)
    assert code == 2, err
    assert f"the listener's revisions ({revisions}) use a table or column" in err, err
    migrate = [*_LISTENERS, "migrate", "orders", spec, "--database-url", _shown(url)]
    assert quoted_commands(err) == [migrate], err
    assert _hidden_said(err, url), err


def test_a_replay_whose_revisions_fail_names_them_and_the_replay_of_the_live_database(
    url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The revisions fail on the fresh database the replay builds; the fix quotes the
    replay of the live one (was: `revision LISTENER ...`, `migrate LISTENER --database-url
    URL`), and the fresh database is gone."""
    spec, revisions = _broken_listener(tmp_path, monkeypatch)
    monkeypatch.setenv("LISTENER_TOPIC_PREFIX", topic_prefix)
    monkeypatch.setenv("LISTENER_APP_ID", f"{topic_prefix}-listeners")
    asyncio.run(create_topic(kafka_bootstrap, f"{topic_prefix}.lifecycle", {}))
    args = ["replay", "orders", spec, "--database-url", url, "--no-swap"]
    monkeypatch.delenv("LISTENER_DATABASE_URL", raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"the listener's revisions ({revisions}) use a table or column" in err, err
    replay = [*_LISTENERS, "replay", "orders", spec, "--database-url", _shown(url), "--no-swap"]
    assert quoted_commands(err) == [replay], err  # was: without --no-swap (it would swap)
    assert _hidden_said(err, url), err
    assert _replay_builds(url) == []  # the fresh one was dropped


def _replay_builds(url: str) -> list[str]:
    """Databases a replay of ``url`` built and left (``listeners._databases`` names)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        live = Path(str(parsed.database))
        return sorted(p.name for p in live.parent.glob(f"{live.stem}.replay-*"))
    engine = create_db_engine(parsed.set(database="postgres").render_as_string(hide_password=False))
    try:
        with engine.connect() as conn:
            names = conn.execute(
                sa.text("SELECT datname FROM pg_database WHERE datname LIKE :like"),
                {"like": f"{(parsed.database or '')[:24]}_replay_%"},
            )
            return sorted(names.scalars())
    finally:
        engine.dispose()


def test_a_replay_that_does_not_swap_is_quoted_without_a_swap(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay asked not to swap, whose fresh database's revisions fail, quotes its rerun
    with ``--no-swap`` (was: without, so the quoted rerun swapped the live database)."""
    spec, _ = _broken_listener(tmp_path, monkeypatch)
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    with pytest.raises(SchemaLagsModelError) as failed:
        upgrade(fresh, [load_listener(spec)], rebuilt=url, swap=False)
    replay = [*_LISTENERS, "replay", spec, "--database-url", _shown(url), "--no-swap"]
    assert quoted_commands(str(failed.value)) == [replay], failed.value


def _shared_with_trips_orders_dropped(url: str) -> None:
    """Orders at its first revision and trips at head in ``url``; orders' table dropped."""
    upgrade(url, [load_listener("orders")], "0001_orders")
    upgrade(url, [load_listener("examples.trips:trips")])
    engine = create_db_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE orders"))
    engine.dispose()


def test_migrate_of_one_listener_names_the_others_its_database_holds(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`migrate orders` alone, on a database trips shares: the quoted replay of orders
    alone would swap trips' tables out of the live database; the message names trips
    (was: only the replay of orders, said to name "every listener whose tables it holds")."""
    _shared_with_trips_orders_dropped(url)
    code, err = _cli(monkeypatch, capsys, "migrate", "orders", "--database-url", url)
    assert code == 2, err
    assert "the database also holds listener(s) ['trips']: add each one's" in err, err


def test_the_quoted_replay_adds_a_built_in_the_database_holds(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay of a listener sharing its database with orders, whose revisions fail:
    the quoted rerun names orders too (a built-in has a CLI name; was: left out, and
    its swap would have left orders' tables in the old database)."""
    spec, _ = _broken_listener(tmp_path, monkeypatch)
    upgrade(url, [load_listener("orders")])
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    with pytest.raises(SchemaLagsModelError) as failed:
        upgrade(fresh, [load_listener(spec)], rebuilt=url)
    replay = [*_LISTENERS, "replay", spec, "orders", "--database-url", _shown(url)]
    assert quoted_commands(str(failed.value)) == [replay], failed.value


def test_a_replay_that_would_swap_out_a_listener_it_does_not_name_refuses(url: str) -> None:
    """The swap replaces the whole database: a replay of orders alone on a database
    trips shares would leave trips' tables in the old one (was: swapped; trips' workers
    then found the live database empty). Refused before the broker is reached."""
    upgrade(url, [load_listener("orders"), load_listener("examples.trips:trips")])
    settings = ListenerSettings(kafka_bootstrap_servers="127.0.0.1:1")
    with pytest.raises(ReplayError, match=r"also holds the tables of listener\(s\) \['trips'\]"):
        asyncio.run(replay(settings, listeners=[load_listener("orders")], database_url=url))


def test_a_database_at_a_revision_its_migrations_lack_says_migrate_cannot_help(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A newer release migrated it (or its version table was edited): get/revision quoted
    `migrate`, which then crashed with Alembic's "Can't locate revision", exit 1."""
    orders = load_listener("orders")
    upgrade(url, [orders])
    engine = create_db_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {orders.version_table} SET version_num = '0009_newer'"))
    engine.dispose()
    for args in (
        ["get", "orders", "o-1"],
        ["migrate", "orders"],
        ["revision", "orders", "-m", "x"],
    ):
        code, err = _cli(monkeypatch, capsys, *args, "--database-url", url)
        assert code == 2, (args, err)
        assert "is at revision ['0009_newer'], which its migrations" in err, (args, err)
        assert "migrate cannot move it" in err and quoted_commands(err) == [], (args, err)


def test_a_password_given_as_a_query_parameter_is_never_printed(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``?password=...`` reaches the driver as well: it was printed in the clear, in the
    URL and in the quoted `migrate`."""
    parsed = sa.make_url(pg_url)
    assert parsed.password, "the test needs a database with a password"
    secret = str(parsed.password)
    url = parsed.set(password=None).update_query_dict({"password": secret})
    shown = url.render_as_string(hide_password=False)
    code, err = _cli(monkeypatch, capsys, "get", "orders", "o-1", "--database-url", shown)
    assert code == 2, err
    assert f"password={secret}" not in err and "password=***" in err, err
    assert "(*** stands for the database's password, not shown: put it back)" in err, err
    migrate = quoted_commands(err)[0]
    code, _ = _cli(monkeypatch, capsys, *[a.replace("***", secret) for a in migrate[3:]])
    assert code == 0


def test_a_query_names_the_other_listeners_its_database_holds(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`get orders` on a database trips shares, orders' column dropped by hand: the quoted
    replay of orders alone would be refused (it would swap trips out); trips is named."""
    upgrade(url, [load_listener("orders"), load_listener("examples.trips:trips")])
    engine = create_db_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE orders DROP COLUMN current_step"))
    engine.dispose()
    code, err = _cli(monkeypatch, capsys, "get", "orders", "o-1", "--database-url", url)
    assert code == 2, err
    assert "the database also holds listener(s) ['trips']: add each one's" in err, err
