"""Engines and sessions for listener databases, and in-place retry of outages."""

from __future__ import annotations

import logging
import shlex
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    NoSuchTableError,
    OperationalError,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_never,
    wait_exponential,
)

__all__ = [
    "create_db_engine",
    "hide_password",
    "is_transient",
    "lacks_schema",
    "migrate_command",
    "migration_fix",
    "retry_in_place",
    "schema_fix",
    "session_factory",
    "ships_with_package",
    "shown_url",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


def create_db_engine(url: str) -> sa.Engine:
    """An engine for a listener database (SQLite file or memory, or PostgreSQL).

    SQLite files get WAL and a busy timeout so queries can read while the worker
    writes; in-memory SQLite shares one connection across threads.
    """
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        memory = parsed.database in (None, "", ":memory:")
        options: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
        if memory:
            options["poolclass"] = StaticPool
        engine = sa.create_engine(url, **options)
        if not memory:
            event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = 5
    return sa.create_engine(url, connect_args=connect_args)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine`` that keep loaded values after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a database outage worth retrying (not a bad statement)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return not _refused_by_sqlite(exc)
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _refused_by_sqlite(exc: DBAPIError) -> bool:
    """Whether SQLite refused the statement itself (``SQLITE_ERROR``), the database being up.

    sqlite3 raises every error as ``OperationalError``, "no such table/column" and syntax
    errors too, which PostgreSQL's driver raises as ``ProgrammingError``; an outage has
    a code of its own (``SQLITE_BUSY``: database is locked, ``SQLITE_IOERR``,
    ``SQLITE_CANTOPEN``, ``SQLITE_FULL``, ...).
    """
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return (
        isinstance(exc.orig, sqlite3.Error)
        and code is not None
        and code & 0xFF == sqlite3.SQLITE_ERROR
    )


#: SQLSTATEs of PostgreSQL's undefined_table and undefined_column.
_MISSING_SQLSTATES = frozenset({"42P01", "42703"})
_MISSING_SQLITE = ("no such table", "no such column", "has no column named")


def lacks_schema(exc: BaseException) -> bool:
    """Whether ``exc`` says a table or column is not in the database (not an outage).

    PostgreSQL's undefined_table / undefined_column, SQLite's "no such table/column", and
    a table that reflection (Alembic's batch mode) does not find.
    """
    if isinstance(exc, NoSuchTableError):
        return True
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) in _MISSING_SQLSTATES or (
        isinstance(orig, sqlite3.OperationalError)
        and any(words in str(orig) for words in _MISSING_SQLITE)
    )


def schema_fix(
    exc: BaseException,
    listener: str,
    database_url: str,
    *,
    rebuild: Sequence[str] = (),
    unnamed: Sequence[str] = (),
) -> str:
    """What to do when ``exc`` says a table or column of a model is not in the database.

    ``""`` for any other error. The listener's migrations then lag its model (a revision
    never written, or never run): retrying cannot help. ``listener`` (as ``python -m
    listeners`` names it) and ``database_url`` (its password hidden) complete the commands.
    ``rebuild``: the listener's migrations ship in this package (a built-in), so they
    create its whole model and the database was changed outside them; a revision written
    into the package would run against every other database of it. The fix rebuilds the
    database instead, replaying the listeners named in ``rebuild`` (every one whose tables
    it holds, as far as known: the swap replaces the whole database); ``unnamed``: others
    it holds that have no CLI name here (said to be added).
    """
    if not lacks_schema(exc):
        return ""
    if rebuild:
        return (
            "the database lacks a table or column of the listener's model, which its "
            "own migrations (shipped with the package) create: the database was changed "
            "outside them (write no revision into the package: every other database of "
            "it would run it); " + _rebuild(rebuild, database_url, unnamed)
        )
    command = ["python", "-m", "listeners"]
    at = ["--database-url", database_url]
    revision = [*command, "revision", listener, "-m", "what the model gained", *at]
    return (
        "the database lacks a table or column of the listener's model: write the "
        f"revision that adds it (`{shlex.join(revision)}`), then run "
        f"`{shlex.join([*command, 'migrate', listener, *at])}`{_password_note(database_url)}"
    )


def migration_fix(
    database_url: str,
    *,
    rebuild: Sequence[str],
    fresh: bool,
    revisions: Path,
    replaying: bool = False,
    unnamed: Sequence[str] = (),
    swap: bool = True,
) -> str:
    """What to do when a revision of a listener found a table or column missing.

    ``fresh``: the database held none of the listener's revisions, so its revisions
    themselves use what no earlier one creates (every fresh database fails the same way):
    they are to be fixed in ``revisions``, then the same command run again (``migrate``,
    or the ``replay`` when ``replaying``, of the listeners in ``rebuild`` at
    ``database_url``). Otherwise the database was changed outside the revisions: a new
    revision cannot help (``migrate`` runs the failing one first, and ``revision``
    refuses a database not at head); it is rebuilt (``replay`` of ``rebuild``).
    ``unnamed``: listeners the database also holds that have no CLI name here (their
    module:attribute is to be added to the replay). ``swap=False``: the replay quoted
    keeps ``--no-swap`` (the failed one was asked not to swap).
    """
    if fresh:
        again = (
            _rebuild(rebuild, database_url, unnamed, swap=swap)
            if replaying
            else f"run {migrate_command(rebuild, database_url)}"
        )
        return (
            f"the listener's revisions ({revisions}) use a table or column that no earlier "
            f"revision of it creates (a fresh database fails the same way): fix them, then {again}"
        )
    return (
        "the database lacks a table or column that the listener's earlier revisions "
        "create: it was changed outside its migrations (a new revision cannot help: "
        "migrate runs the failing one first); "
        + _rebuild(rebuild, database_url, unnamed, swap=swap)
    )


def _rebuild(
    listeners: Sequence[str], database_url: str, unnamed: Sequence[str] = (), *, swap: bool = True
) -> str:
    """The ``replay`` that rebuilds the database at ``database_url`` for ``listeners``.

    ``unnamed``: listeners it also holds whose CLI name is unknown (said to be added).
    ``swap=False``: with ``--no-swap``.
    """
    replay = ["python", "-m", "listeners", "replay", *listeners, "--database-url", database_url]
    replay += [] if swap else ["--no-swap"]
    also = (
        f"; the database also holds listener(s) {sorted(unnamed)}: add each one's "
        "module:attribute to that replay (replay refuses to swap without them)"
        if unnamed
        else ""
    )
    return (
        "rebuild it from the lifecycle topic, naming every listener whose tables it holds "
        f"(the swap replaces the whole database): `{shlex.join(replay)}`"
        + _password_note(database_url)
        + also
    )


def migrate_command(listeners: Sequence[str], database_url: str) -> str:
    """The quoted ``migrate`` of ``listeners`` at ``database_url``, and the password note."""
    migrate = ["python", "-m", "listeners", "migrate", *listeners, "--database-url", database_url]
    return f"`{shlex.join(migrate)}`{_password_note(database_url)}"


def _password_note(database_url: str) -> str:
    """What a quoted ``database_url`` whose password is hidden (``***``) needs said."""
    if _password_hidden(database_url):
        return " (*** stands for the database's password, not shown: put it back)"
    return ""


def _password_hidden(database_url: str) -> bool:
    """Whether ``database_url`` was rendered with its password hidden (``***``)."""
    try:
        url = sa.make_url(database_url)
        return "***" in (url.password, url.query.get("password"))
    except ArgumentError:  # a placeholder ("URL")
        return False


def ships_with_package(migrations: Path) -> bool:
    """Whether a listener's ``migrations`` directory is part of this package (a built-in)."""
    return Path(__file__).resolve().parent in migrations.resolve().parents


def hide_password(database_url: str | sa.URL) -> str:
    """``database_url`` as shown to people: its password hidden (``***``).

    Also one given as a query parameter (``?password=...``, which the driver takes too).
    """
    url = sa.make_url(database_url)
    if "password" in url.query:
        url = url.update_query_dict({"password": "***"})
    return url.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def shown_url(sessions: sessionmaker[Session]) -> str:
    """The URL of the database ``sessions`` are bound to, its password hidden."""
    bind = sessions.kw.get("bind")
    url = getattr(bind, "url", None)
    return hide_password(url) if url is not None else "URL"


async def retry_in_place(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    max_delay: timedelta,
    on_retry: Callable[[BaseException, int], None] | None = None,
) -> T:
    """Await ``call()`` until it stops raising transient database errors.

    Retries forever with exponential backoff capped at ``max_delay``: the caller holds
    its partitions meanwhile, so an outage stalls the listener and loses nothing. Any
    other exception propagates at once.

    Args:
        call: Zero-argument coroutine function doing the database work.
        what: Shown in the warning logged before each retry.
        max_delay: Longest wait between two attempts.
        on_retry: Called with the error and attempt number before each retry.
    """

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        assert exc is not None
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning(
            "%s: database unavailable (attempt %d, retrying in %.1fs): %s",
            what,
            state.attempt_number,
            state.upcoming_sleep,
            first_line,
        )
        if on_retry is not None:
            on_retry(exc, state.attempt_number)

    retrying = AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential(multiplier=0.1, max=max_delay.total_seconds()),
        stop=stop_never,
        before_sleep=before_sleep,
        reraise=True,
    )

    async def attempt() -> T:
        return await call()

    return await retrying(attempt)


class SqlCounter:
    """Statements and commits sent by an engine, counted at the driver (for budgets).

    An executemany counts one statement per parameter row: that is what the server
    executes (psycopg sends each row as its own statement, even in pipeline mode).
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.statements = 0
        self.commits = 0
        event.listen(engine, "before_cursor_execute", self._on_statement)
        event.listen(engine, "commit", self._on_commit)

    def _on_statement(
        self, _conn: Any, _cursor: Any, _sql: str, parameters: Any, _ctx: Any, many: bool
    ) -> None:
        self.statements += len(parameters) if many else 1

    def _on_commit(self, *_: Any) -> None:
        self.commits += 1

    def as_dict(self) -> dict[str, int]:
        return {"sql_statements": self.statements, "sql_commits": self.commits}
