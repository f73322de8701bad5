"""Enum, JSON and TypeDecorator columns go on PostgreSQL's array path, written as the ORM
writes them.

Such a table used to be written row by row (a statement per saga); now a batch is three
statements whatever its size, and every value is what ``session.add`` and an ORM flush
store: an enum by name (or by value with ``values_callable``), JSON ``None`` as JSON
``null`` when a handler set it and SQL ``NULL`` when none did, a TypeDecorator's
``process_bind_param`` applied once (``_Suffixed`` appends "!": a stored value no
handler changed is not processed again).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import JSON, Enum, MetaData
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from listeners import NAMING_CONVENTION, Listener, SagaRow, create_db_engine
from listeners._events import Event
from tests.integration import orm_reference
from tests.integration.test_listener_bind_types import _Suffixed
from tests.integration.test_listener_bulk_values import _event

pytestmark = pytest.mark.integration


class Color(enum.Enum):
    red = "R"
    blue = "B"


class _Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class _Kit(SagaRow, _Base):
    __tablename__ = "kits"
    color: Mapped[Color | None] = mapped_column(Enum(Color, name="kit_color"))
    shade: Mapped[Color | None] = mapped_column(
        Enum(Color, native_enum=False, values_callable=lambda e: [m.value for m in e])
    )
    doc: Mapped[Any] = mapped_column(JSON, nullable=True)
    docb: Mapped[Any] = mapped_column(JSON().with_variant(JSONB(), "postgresql"), nullable=True)
    plain: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    note: Mapped[str | None] = mapped_column(_Suffixed)


class _Isoformat(sa.TypeDecorator[Any]):
    """Stores a date's isoformat; reads back the text (no process_result_value)."""

    impl = sa.String(20)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        return None if value is None else value.isoformat()


class _JsonText(sa.TypeDecorator[Any]):
    """SQLAlchemy's JSONEncodedDict recipe, used as ``MutableDict.as_mutable(_JsonText)``."""

    impl = sa.String(200)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        return None if value is None else json.dumps(value)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        return None if value is None else json.loads(value)


class _Cents(sa.TypeDecorator[Any]):
    """Decimal amounts stored as whole cents; no ``None`` check (its column is NOT NULL)."""

    impl = sa.Integer
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        return int(value * 100)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        return Decimal(value) / 100


class _Box(SagaRow, _Base):
    __tablename__ = "boxes"
    day: Mapped[Any] = mapped_column(_Isoformat, nullable=True)
    bag: Mapped[Any] = mapped_column(MutableDict.as_mutable(_JsonText), nullable=True)
    note: Mapped[str | None] = mapped_column(sa.String(20))
    cents: Mapped[Decimal] = mapped_column(_Cents, default=Decimal("1.5"))


_LISTENER = Listener("kits", model=_Kit, saga_types={"booking"})  # its timeline table
_BOX_LISTENER = Listener("boxes", model=_Box, saga_types={"booking"})
_INSTANTS = ("started_at", "updated_at")

_SETS: dict[tuple[str, int], dict[str, Any]] = {
    ("s0", 1): {
        "color": Color.red,
        "shade": Color.blue,
        "doc": {"a": [1, 2]},
        "docb": {"b": "x"},
        "plain": [1],
        "note": "paid",
    },
    ("s1", 1): {"doc": None, "plain": None},  # doc: JSON null; docb never set: SQL NULL
    ("s2", 1): {},
    ("s0", 2): {"doc": {"a": [3]}},  # note unchanged: stays "paid!", not "paid!!"
    ("s1", 2): {"docb": None, "color": Color.blue},  # docb None again: unchanged, NULL
    ("s2", 2): {"note": "x", "shade": Color.red},
}
_BATCHES = [
    [_event("s0"), _event("s1"), _event("s2")],
    [_event(s, 2, "step_started", step="pay") for s in ("s0", "s1", "s2")] + [_event("s3")],
]


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    yield from orm_reference.engines(request, tmp_path, _Base.metadata)


def _listener() -> Listener[Any]:
    return orm_reference.setting(_Kit, _SETS)


@pytest.mark.parametrize("arrays", [True, False], ids=["arrays", "row-by-row"])
def test_typed_columns_are_written_as_the_orm_writes_them(engine: sa.Engine, arrays: bool) -> None:
    # arrays=False: the executemany PostgreSQL falls back to (SQLite always uses it)
    listener = _listener()
    listener._row_sql.arrays = arrays
    run = orm_reference.by_listener(engine, listener, _BATCHES, _INSTANTS)
    assert run.after == orm_reference.by_orm(engine, _listener(), _BATCHES, _INSTANTS)
    columns = [col.key for col in _Kit.__table__.columns]
    first, last = ([dict(zip(columns, row, strict=True)) for row in t] for t in run.after)
    assert [(r["color"], r["shade"], r["doc"], r["docb"], r["plain"]) for r in first] == [
        ("red", "B", '{"a": [1, 2]}', '{"b": "x"}', "[1]"),
        (None, None, "null", None, None),
        (None, None, None, None, None),
    ]
    assert [(r["doc"], r["docb"], r["note"], r["color"]) for r in last] == [
        ('{"a": [3]}', '{"b": "x"}', "paid!", "red"),
        ("null", None, None, "blue"),
        (None, None, "x!", None),
        (None, None, None, None),  # s3: new in a batch of stored sagas
    ]
    if engine.dialect.name == "postgresql" and arrays:
        assert run.statements == [3, 3]  # the SELECT, the upsert, the timeline insert


def test_a_batch_of_many_sagas_is_three_statements(pg_url: str) -> None:
    engine = create_db_engine(pg_url)
    _Base.metadata.create_all(engine)
    events = [_event(f"k{i:03}") for i in range(100)]
    more = [_event(f"k{i:03}", 2, "step_started", step="pay") for i in range(100)]
    listener = _listener()

    @listener.on_start
    def fill(row: _Kit, event: Event) -> None:
        row.color, row.doc, row.note = Color.blue, {"i": event.saga_id}, event.saga_id

    run = orm_reference.by_listener(engine, listener, [events, more], _INSTANTS)
    assert run.statements == [3, 3]
    assert len(run.after[1]) == 100
    engine.dispose()


def _boxes(engine: sa.Engine, sets: dict[tuple[str, int], dict[str, Any]], arrays: bool) -> Any:
    """The boxes after the last batch (checked equal to the ORM's); s1 grows its bag in place."""

    def make() -> Listener[Any]:
        listener = orm_reference.setting(_Box, sets)

        @listener.on("step_started")
        def grow(row: _Box, event: Event) -> None:
            if row.saga_id == "s1":
                row.bag["b"] = 2  # in place

        return listener

    listener = make()
    listener._row_sql.arrays = arrays
    run = orm_reference.by_listener(engine, listener, _BATCHES, _INSTANTS)
    assert run.after == orm_reference.by_orm(engine, make(), _BATCHES, _INSTANTS)
    return [row[:4] for row in run.after[-1]]


@pytest.mark.parametrize("arrays", [True, False], ids=["arrays", "row-by-row"])
def test_a_type_decorator_value_changed_in_place_is_written(
    engine: sa.Engine, arrays: bool
) -> None:
    """As a ``MutableDict`` type's flush writes it (was: kept as stored, the change lost);
    an unchanged value of a type refusing ``None`` is kept (``cents``)."""
    sets: dict[tuple[str, int], dict[str, Any]] = {
        ("s1", 1): {"bag": {"a": 1}},
        ("s0", 2): {"note": "x"},
        ("s2", 2): {"cents": Decimal("2.25")},
    }
    assert _boxes(engine, sets, arrays) == [
        (None, None, "x", "150"),
        (None, '{"a": 1, "b": 2}', None, "150"),
        (None, None, None, "225"),
        (None, None, None, "150"),
    ]


@pytest.mark.parametrize("arrays", [True, False], ids=["arrays", "row-by-row"])
def test_a_stored_type_decorator_value_is_not_processed_again(
    engine: sa.Engine, arrays: bool
) -> None:
    """An unchanged value is not given to ``process_bind_param``, as a flush does not
    process an unchanged column (was, row by row: SQLite and PostgreSQL's fallback,
    ``'str' object has no attribute 'isoformat'`` at every batch of a stored saga, every
    event a dead letter)."""
    sets: dict[tuple[str, int], dict[str, Any]] = {
        ("s0", 1): {"day": date(2026, 1, 2), "bag": {"a": 1}},
        ("s1", 1): {"bag": {"a": 1}},
        ("s2", 1): {"day": date(2026, 3, 4)},
        ("s0", 2): {"note": "x"},  # day and bag unchanged
        ("s2", 2): {"day": date(2026, 5, 6)},
    }
    assert _boxes(engine, sets, arrays) == [
        ("2026-01-02", '{"a": 1}', "x", "150"),
        (None, '{"a": 1, "b": 2}', None, "150"),
        ("2026-05-06", None, None, "150"),
        (None, None, None, "150"),
    ]


def _respelled(engine: sa.Engine, number: int) -> None:
    """After the first batch, another writer stores s0's and s1's JSON spelled its own way."""
    if number == 0:
        with engine.begin() as conn:
            conn.execute(
                sa.text("""UPDATE kits SET doc = '{"a" : [1,2.0]}', plain = '[ 1 ]'
                WHERE saga_id = 's0'""")
            )
            conn.execute(sa.text("""UPDATE kits SET doc = '{"k"\\:1}' WHERE saga_id = 's1'"""))


@pytest.mark.parametrize("arrays", [True, False], ids=["arrays", "row-by-row"])
def test_a_stored_json_value_no_handler_changed_keeps_its_text(
    engine: sa.Engine, arrays: bool
) -> None:
    """As a flush leaves an unchanged column out of its UPDATE (was: every batch wrote
    the value back, re-serialised: ``{"a": [1, 2.0]}``); a value assigned again, equal,
    is unchanged for the ORM too."""
    sets: dict[tuple[str, int], dict[str, Any]] = {
        ("s0", 1): {"doc": {"a": [1, 2]}, "plain": [1]},
        ("s1", 1): {"doc": {"k": 2}},
        ("s0", 2): {"note": "x"},
        ("s1", 2): {"doc": {"k": 1.0}},  # equal to what is stored
        ("s2", 2): {"doc": {"k": 3}},
    }
    listener = orm_reference.setting(_Kit, sets)
    listener._row_sql.arrays = arrays
    run = orm_reference.by_listener(engine, listener, _BATCHES, _INSTANTS, _respelled)
    reference = orm_reference.setting(_Kit, sets)
    assert run.after == orm_reference.by_orm(engine, reference, _BATCHES, _INSTANTS, _respelled)
    columns = [col.key for col in _Kit.__table__.columns]
    last = [dict(zip(columns, row, strict=True)) for row in run.after[-1]]
    assert [(r["doc"], r["plain"], r["note"]) for r in last] == [
        ('{"a" : [1,2.0]}', "[ 1 ]", "x!"),
        ('{"k":1}', None, None),
        ('{"k": 3}', None, None),
        (None, None, None),
    ]


@pytest.mark.parametrize("arrays", [True, False], ids=["arrays", "row-by-row"])
def test_an_in_place_change_of_a_plain_json_value_is_written(
    engine: sa.Engine, arrays: bool
) -> None:
    """Unlike a flush (plain ``JSON`` tracks no in-place change): README."""
    listener = orm_reference.setting(_Kit, {("s0", 1): {"doc": {"a": [1]}}})

    @listener.on("step_started")
    def grow(row: _Kit, event: Event) -> None:
        row.doc["a"].append(2)

    listener._row_sql.arrays = arrays
    run = orm_reference.by_listener(engine, listener, [_BATCHES[0][:1], _BATCHES[1][:1]])
    assert run.after[-1][0][list(_Kit.__table__.columns.keys()).index("doc")] == '{"a": [1, 2]}'
