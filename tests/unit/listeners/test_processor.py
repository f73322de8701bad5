"""Decoding, dead letters and the no-crash guarantees of the batch processor."""

from __future__ import annotations

import re
import shlex
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import String
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from coordinator.events import DeadLetter
from listeners import BatchResult, Listener, SagaRow, create_db_engine, session_factory
from listeners._cli import _parser
from listeners._db import is_transient, schema_fix
from listeners._decoding import RawRecord, decode_record
from listeners._processor import BatchProcessor
from listeners._registry import load_listener
from listeners.orders import OrderStatusListener, get_order
from tests.listener_events import order_saga


def _record(event: Any, offset: int = 0) -> RawRecord:
    return RawRecord("saga.lifecycle", 0, offset, event.saga_id.encode(), event.to_json())


def _processor(
    sessions: sessionmaker[Session], listener: Any, letters: list[DeadLetter]
) -> BatchProcessor:
    async def sink(letter: DeadLetter) -> None:
        letters.append(letter)

    return BatchProcessor(
        listeners=[listener],
        sessions=sessions,
        dead_letters=sink,
        agent="test.apply",
        max_delay=timedelta(milliseconds=20),
    )


@pytest.mark.parametrize(
    ("value", "error_type"),
    [
        (b"not json", "ValidationError"),
        (b'{"type": "saga_started"}', "ValidationError"),
        (b'{"type": "no_such_event", "saga_id": "s"}', "ValidationError"),
        (b"", "EmptyValue"),
    ],
)
def test_undecodable_records_become_dead_letters(value: bytes, error_type: str) -> None:
    record = RawRecord("saga.lifecycle", 3, 42, b"s", value)
    [letter] = decode_record(record, agent="a")
    assert isinstance(letter, DeadLetter)
    assert letter.error_type == error_type
    assert (letter.source_topic, letter.partition, letter.offset, letter.key) == (
        "saga.lifecycle",
        3,
        42,
        "s",
    )
    assert letter.value() == value


def test_wrong_key_is_a_dead_letter() -> None:
    event = order_saga("s1", "completed")[0]
    record = RawRecord("saga.lifecycle", 0, 0, b"other", event.to_json())
    [letter] = decode_record(record, agent="a")
    assert isinstance(letter, DeadLetter)
    assert letter.error_type == "KeyMismatch"


async def test_bad_records_are_dead_lettered_and_good_ones_applied(
    sessions: sessionmaker[Session], listener: OrderStatusListener
) -> None:
    events = order_saga("s1", "completed", order_id="o1")
    records = [_record(e, i) for i, e in enumerate(events)]
    records.insert(3, RawRecord("saga.lifecycle", 0, 99, b"s1", b"{broken"))
    letters: list[DeadLetter] = []
    result = await _processor(sessions, listener, letters).process(records)
    assert result == BatchResult(applied=len(events))
    assert [letter.offset for letter in letters] == [99]
    with sessions() as session:
        assert get_order(session, "o1").status == "completed"


async def test_database_outage_is_retried_in_place(
    sessions: sessionmaker[Session], listener: OrderStatusListener
) -> None:
    class Flaky(OrderStatusListener):
        failures = 3

        def load(self, session: Session, saga_ids: Any) -> Any:
            if self.failures:
                self.failures -= 1
                raise OperationalError("SELECT", {}, ConnectionRefusedError("db down"))
            return super().load(session, saga_ids)

    flaky = Flaky()
    letters: list[DeadLetter] = []
    processor = _processor(sessions, flaky, letters)
    events = order_saga("s1", "completed", order_id="o1")
    result = await processor.process([_record(e, i) for i, e in enumerate(events)])
    assert result.applied == len(events)
    assert processor.stats.db_retries == 3
    assert letters == []


@pytest.mark.parametrize(
    ("code", "outage"),
    [
        (sqlite3.SQLITE_BUSY, True),  # database is locked
        (sqlite3.SQLITE_IOERR_WRITE, True),  # disk I/O error
        (sqlite3.SQLITE_CANTOPEN, True),  # unable to open database file
        (sqlite3.SQLITE_FULL, True),  # database or disk is full
        (sqlite3.SQLITE_ERROR, False),  # no such table/column, has no column named, ...
        (sqlite3.SQLITE_ERROR_MISSING_COLLSEQ, False),
    ],
)
def test_sqlite_outages_are_transient_a_refused_statement_is_not(code: int, outage: bool) -> None:
    error = sqlite3.OperationalError("as sqlite3 raises it")
    error.sqlite_errorcode = code
    assert is_transient(OperationalError("SELECT 1", {}, error)) is outage


async def test_a_poison_event_is_isolated_not_fatal(
    sessions: sessionmaker[Session], listener: OrderStatusListener
) -> None:
    class Picky(OrderStatusListener):
        def apply(self, state: Any, event: Any) -> Any:
            if event.saga_id == "bad":
                raise sa.exc.DataError("INSERT", {}, ValueError("value too long"))
            return super().apply(state, event)

    good = order_saga("good", "completed", order_id="o-good")
    bad = order_saga("bad", "completed", order_id="o-bad")[:1]
    letters: list[DeadLetter] = []
    processor = _processor(sessions, Picky(), letters)
    records = [_record(e, i) for i, e in enumerate([*bad, *good])]
    result = await processor.process(records)
    assert result.applied == len(good)
    assert [letter.key for letter in letters] == ["bad"]
    assert "DataError" in letters[0].reason
    assert processor.stats.isolated_batches == 1
    with sessions() as session:
        assert get_order(session, "o-good").status == "completed"


class _ShadowBase(DeclarativeBase):
    pass


class _Shadow(SagaRow, _ShadowBase):
    __tablename__ = "shadows"
    note: Mapped[str | None] = mapped_column(String(20))


#: a second listener of order sagas, loaded by name as a worker loads it
SHADOW = Listener("shadows", model=_Shadow, saga_types={"order_fulfillment"})


def _commands(spec: str, url: str) -> tuple[list[str], list[str]]:
    at = ["--database-url", url]
    return (
        ["python", "-m", "listeners", "revision", spec, "-m", "what the model gained", *at],
        ["python", "-m", "listeners", "migrate", spec, *at],
    )


def quoted_commands(message: str) -> list[list[str]]:
    """The commands ``message`` quotes (between backticks), as argument lists.

    Each must be one the CLI takes as it is (it is parsed with the CLI's own parser).
    """
    commands = [shlex.split(quoted) for quoted in re.findall(r"`([^`]+)`", message)]
    for command in commands:
        assert command[:3] == ["python", "-m", "listeners"], command
        _parser().parse_args(command[3:])
    return commands


def _names_the_commands(
    reason: str, spec: str, url: str, *, rebuild: list[str] | None = None
) -> None:
    """``reason`` quotes the exact commands to run, and the CLI takes them as they are.

    ``rebuild``: a built-in listener's, whose migrations ship in the package: the database
    is rebuilt (``replay`` of these listeners), no revision is written into the package.
    """
    if rebuild is not None:
        replay = ["python", "-m", "listeners", "replay", *rebuild, "--database-url", url]
        assert f"(the swap replaces the whole database): `{shlex.join(replay)}`" in reason, reason
        assert "listeners revision" not in reason, reason
        args = _parser().parse_args(replay[3:])
        assert (args.command, args.listeners, args.database_url) == ("replay", rebuild, url)
        return
    revision, migrate = _commands(spec, url)
    assert f"write the revision that adds it (`{shlex.join(revision)}`)" in reason, reason
    assert f"then run `{shlex.join(migrate)}`" in reason, reason
    for command in (revision, migrate):
        args = _parser().parse_args(command[3:])
        assert (args.command, args.database_url) == (command[3], url)
        assert (args.listener if command[3] == "revision" else args.listeners) in (spec, [spec])


@pytest.mark.parametrize(
    ("shared", "lacks"),
    [(False, "orders"), (True, "shadows"), (True, "orders")],
    ids=["own-database", "shared-database", "shared-database-built-in-lacks"],
)
async def test_a_column_the_database_lacks_dead_letters_naming_the_commands_that_add_it(
    tmp_path: Path, shared: bool, lacks: str
) -> None:
    """The reason names the listener whose table lacks it, as `python -m listeners` names
    it, and its database (was: `python -m listeners revision` without its arguments). A
    built-in's database is rebuilt with every listener sharing it (was: a revision written
    into the package, which every other database of it would then run)."""
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    engine = create_db_engine(url)
    orders = OrderStatusListener()  # built in code: the built-in's name is its spec
    shadow_spec = "tests.unit.listeners.test_processor:SHADOW"
    targets = [orders, load_listener(shadow_spec)]
    if not shared:
        targets = targets[:1]
    for target in targets:
        target.table.metadata.create_all(engine)
    lacking = orders if lacks == "orders" else targets[1]
    with engine.begin() as conn:
        column = "note" if lacking is not orders else "current_step"
        conn.execute(sa.text(f"ALTER TABLE {lacking.table.name} DROP COLUMN {column}"))
    letters: list[DeadLetter] = []

    async def sink(letter: DeadLetter) -> None:
        letters.append(letter)

    processor = BatchProcessor(
        listeners=targets, sessions=session_factory(engine), dead_letters=sink, agent="t"
    )
    events = order_saga("s1", "completed", order_id="o1")
    await processor.process([_record(e, i) for i, e in enumerate(events)])
    engine.dispose()
    assert letters, "every event is a dead letter"
    spec = shadow_spec if lacking is not orders else "orders"
    # the built-in's own migrations create the column: no revision into the package
    rebuild = ["orders", shadow_spec][: len(targets)] if lacking is orders else None
    for letter in letters:
        _names_the_commands(letter.reason, spec, url, rebuild=rebuild)


def test_a_password_hidden_in_the_quoted_commands_is_said_to_be_hidden() -> None:
    """The commands quote the database URL with its password hidden (``***``): run as they
    are, they fail to log in ("database does not answer"); the fix says so (was: silent)."""
    exc = OperationalError("SELECT t.c FROM t", {}, sqlite3.OperationalError("no such column: t.c"))
    hidden = schema_fix(exc, "examples.trips:trips", "postgresql+psycopg://app:***@db/trips")
    assert hidden.endswith("(*** stands for the database's password, not shown: put it back)")
    for url in ("sqlite:///trips.db", "postgresql+psycopg://app@db/trips"):
        assert "password" not in schema_fix(exc, "examples.trips:trips", url)
