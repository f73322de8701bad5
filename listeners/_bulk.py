"""A listener batch's statements: one SELECT, one upsert, one timeline insert, whatever its size.

On PostgreSQL each is ONE statement for the server: the rows travel as one array per
column and ``unnest`` turns them back into rows (``INSERT ... SELECT * FROM unnest(...)``,
``WHERE saga_id = ANY(...)``). An executemany of N rows is N statements there (psycopg
sends each parameter row as its own Bind/Execute, even in pipeline mode): 4,500
statements for a batch of 500 simple sagas, which cost the server more CPU than
everything else the listener asks of it. With one constant statement text per table,
psycopg prepares it after a few batches, and the server parses and plans it once.

Elsewhere (SQLite), and on PostgreSQL for a table with a column whose type has no array
form (a type that wraps its value in SQL, or one :mod:`listeners._arrays` does not
list), the same statements go as an executemany. A type's own bind processing (a Boolean's
strictness check, an Enum's name, JSON's serialisation, a TypeDecorator's
``process_bind_param``) runs on the array path as SQLAlchemy runs it row by row: the
dialect implementation's ``bind_processor`` on every value, before the values are
checked and sent; the array is cast to the type the processed values are for (a
TypeDecorator's ``impl``, an enum's own type, ``JSON`` / ``JSONB``).

A column may have SQL in place of its value, row by row (:class:`ColumnSql`: a server
default on insert, an ``onupdate`` expression, the stored value kept): a *mode* per row
(an integer array beside the values) picks it in a ``CASE``; see :mod:`listeners._flush`.

Values are given column-wise (``{column key: [value per row]}``), as the arrays need them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from listeners._arrays import Binds, Columns, array_type, stored_as, unbounded, uniform
from listeners._db import is_transient
from listeners._errors import ListenerConfigError
from listeners._rows import utc

__all__ = ["INSERT_DEFAULT", "KEEP", "ON_UPDATE", "VALUE", "ColumnSql", "Columns", "TableSql"]


#: Modes of a row's column (:class:`ColumnSql`): its value, or SQL in its place.
VALUE, INSERT_DEFAULT, ON_UPDATE, KEEP = 0, 1, 2, 3


@dataclass(frozen=True)
class ColumnSql:
    """What may stand in a column's place, chosen per row by its mode.

    Attributes:
        insert: SQL for :data:`INSERT_DEFAULT` (a server default, a SQL ``default=``,
            ``NULL``), or ``None``.
        update: SQL for :data:`ON_UPDATE` (a SQL ``onupdate=``), or ``None``.
        keep: Whether :data:`KEEP` may be asked: the stored value, read by the server.
    """

    insert: Any = None
    update: Any = None
    keep: bool = False


def _unsent(error: Exception) -> bool:
    """Whether ``error`` came from dumping the arrays, before the server saw anything.

    psycopg's own errors have no SQLSTATE; the transaction is still usable. A lost
    connection has none either, and is an outage: it must reach the caller as one.
    """
    if isinstance(error, TypeError | ValueError):
        return True
    if is_transient(error):
        return False
    orig = getattr(error, "orig", None)
    return isinstance(error, sa.exc.DBAPIError) and getattr(orig, "sqlstate", "") is None


def _datetime(type_: Any) -> bool:
    """Whether ``type_`` stores a datetime (itself, or under a TypeDecorator)."""
    return isinstance(getattr(type_, "impl_instance", type_), sa.DateTime)


class TableSql:
    """The batch statements of one table, built once per dialect and reused.

    Args:
        table: The table.
        key: Its primary-key column the upsert and the ``SELECT`` go by (``None`` for
            an insert-only table).
        sql: Column key -> what may stand in its value's place, row by row (the rows'
            modes are given to :meth:`upsert`).
    """

    def __init__(
        self,
        table: sa.Table,
        key: sa.Column[Any] | None = None,
        sql: Mapping[str, ColumnSql] | None = None,
    ) -> None:
        self.table = table
        self.key = key
        self.sql = dict(sql or {})
        #: ``False`` sends every batch row by row (the statement the arrays replace).
        self.arrays = True
        self._cache: dict[tuple[str, str], Any] = {}
        self._binds: dict[str, Binds] = {}
        self._datetimes = frozenset(col.key for col in table.columns if _datetime(col.type))

    def _binds_of(self, session: Session) -> Binds:
        dialect = session.get_bind().dialect
        binds = self._binds.get(dialect.name)
        if binds is None:
            binds = self._binds[dialect.name] = Binds.of(self.table, dialect)
        return binds

    def _dialect(self, session: Session) -> str:
        name = session.get_bind().dialect.name
        if name not in ("postgresql", "sqlite"):
            raise ListenerConfigError(
                f"listener database dialect {name!r} is not supported; "
                "use a postgresql+psycopg:// or sqlite:/// database URL"
            )
        return name

    def _unnest(self, keys: Sequence[str], session: Session) -> sa.Select[Any]:
        """``SELECT * FROM unnest(:c0::type[], ...)``: rows from one array per column.

        The modes of the :attr:`sql` columns follow the values' arrays.
        """
        casts = self._binds_of(session).casts
        assert casts is not None
        types = [postgresql.ARRAY(casts[key]) for key in keys]
        types += [postgresql.ARRAY(sa.Integer()) for _ in self.sql]
        binds = [sa.bindparam(f"c{i}", type_=type_) for i, type_ in enumerate(types)]
        names: list[sa.ColumnClause[Any]] = [sa.column(f"c{i}") for i in range(len(types))]
        source = sa.func.unnest(*binds).table_valued(*names).render_derived()
        columns = [source.c[f"c{i}"] for i in range(len(types))]
        return sa.select(*self._sources(keys, columns, session.get_bind().dialect))

    def _sources(
        self,
        keys: Sequence[str],
        params: Sequence[Any],
        dialect: sa.Dialect,
        kept: frozenset[str] = frozenset(),
    ) -> list[Any]:
        """The SQL of each column's value: its parameter, or a ``CASE`` on its mode.

        ``kept``: columns every row keeps (:data:`KEEP`): the stored value, no parameter.
        """
        if not self.sql:
            return list(params[: len(keys)])
        assert self.key is not None
        by_key = dict(zip(keys, params, strict=False))
        modes = dict(zip(self.sql, params[len(keys) :], strict=True))
        stored = self.table.alias("stored")
        pk = self.key.key

        def stored_value(key: str) -> Any:
            return sa.select(stored.c[key]).where(stored.c[pk] == by_key[pk]).scalar_subquery()

        sources = []
        for key in keys:
            sql = self.sql.get(key)
            if sql is None:
                sources.append(by_key[key])
                continue
            if key in kept:
                sources.append(stored_value(key))
                continue
            mode = modes[key]
            # PostgreSQL gives a CASE one type from implicit casts only; the ORM's INSERT
            # (UPDATE) assigns the default to the column, with an assignment cast
            # (gen_random_uuid() into a varchar): the default gets the values' own type.
            type_ = None
            if dialect.name == "postgresql":
                type_ = unbounded(stored_as(self.table.c[key].type.dialect_impl(dialect)))
            whens = []
            if sql.insert is not None:
                whens.append((mode == _inline(INSERT_DEFAULT), _inline(sql.insert, dialect, type_)))
            if sql.update is not None:
                whens.append((mode == _inline(ON_UPDATE), _inline(sql.update, dialect, type_)))
            if sql.keep:
                whens.append((mode == _inline(KEEP), stored_value(key)))
            sources.append(sa.case(*whens, else_=by_key[key]))
        return sources

    def _params(self, values: Columns, modes: Columns) -> dict[str, Sequence[Any]]:
        columns = [*values.values(), *(modes[key] for key in self.sql)]
        return {f"c{i}": column for i, column in enumerate(columns)}

    def _rows(self, values: Columns, modes: Columns, dialect: str) -> list[dict[str, Any]]:
        keys = list(values)
        rows = [dict(zip(keys, row, strict=True)) for row in zip(*values.values(), strict=True)]
        if dialect == "sqlite":
            # A DateTime column keeps the wall clock, its zone dropped, and is read back
            # as UTC: it gets UTC. Other columns get the value as given (a Date column
            # its own date, a String its text), as the ORM writes them.
            times = self._datetimes.intersection(keys)
            for row in rows:
                for key in times:
                    value = row[key]
                    if isinstance(value, datetime) and value.tzinfo is not None:
                        row[key] = utc(value)
        if self.sql:  # the statement's own parameter names (see _statement)
            rows = [
                {f"_c{i}": value for i, value in enumerate([*row.values(), *mode])}
                for row, mode in zip(
                    rows, zip(*(modes[key] for key in self.sql), strict=True), strict=True
                )
            ]
        return rows

    def select(
        self, session: Session, columns: Sequence[sa.ColumnElement[Any]], ids: Sequence[Any]
    ) -> sa.Result[Any]:
        """``SELECT columns FROM table WHERE key IN ids``, in one statement."""
        assert self.key is not None
        dialect = self._dialect(session)
        key = self.key.key
        binds = self._binds_of(session)
        if (
            dialect != "postgresql"
            or not array_type(self.key.type)
            or key in binds.wrapped
            or key in binds.processors
        ):  # the key's own SQL or processing: SQLAlchemy's IN does it
            return session.execute(sa.select(*columns).where(self.key.in_(list(ids))))
        statement = self._cache.get(("select", dialect))
        if statement is None:
            ids_param = sa.bindparam("ids", type_=postgresql.ARRAY(unbounded(self.key.type)))
            statement = sa.select(*columns).where(self.key == sa.any_(ids_param))
            self._cache[("select", dialect)] = statement
        return session.execute(statement, {"ids": list(ids)})

    def upsert(
        self,
        session: Session,
        values: Columns,
        *,
        keep: Sequence[str],
        newer: str,
        modes: Columns | None = None,
    ) -> None:
        """Insert the rows; a row whose key exists replaces it only if its ``newer`` is.

        Args:
            session: The batch's session (its transaction).
            values: Every column of the rows, column-wise.
            keep: Columns a replacement leaves as stored (besides the key).
            newer: The column that must grow for a row to be replaced (``last_seq``).
            modes: Column key -> each row's mode (:class:`ColumnSql`), for the
                :attr:`sql` columns; missing ones are :data:`VALUE`.
        """
        key = self.key
        assert key is not None

        def finish(insert: Any) -> Any:
            return insert.on_conflict_do_update(
                index_elements=[key],
                set_={k: insert.excluded[k] for k in values if k != key.key and k not in keep},
                # A second writer (a rebalance in flight) never moves a saga backwards.
                where=self.table.c[newer] < insert.excluded[newer],
            )

        self._insert(session, "upsert", values, finish, modes or {})

    def insert_new(self, session: Session, values: Columns) -> None:
        """Insert the rows, skipping any whose primary key is already there."""
        self._insert(session, "insert", values, lambda insert: insert.on_conflict_do_nothing(), {})

    def _insert(
        self,
        session: Session,
        kind: str,
        values: Columns,
        finish: Callable[[Any], Any],
        modes: Columns,
    ) -> None:
        dialect = self._dialect(session)
        if self.sql:
            rows = len(next(iter(values.values()), ()))
            modes = {key: modes.get(key) or [VALUE] * rows for key in self.sql}
        arrays = self._arrays(session, values, modes) if dialect == "postgresql" else None
        if arrays is not None:
            statement = self._statement(session, kind, values, finish, arrays=True)
            try:
                session.connection().exec_driver_sql(statement, self._params(arrays, modes))
                return
            except (sa.exc.DBAPIError, TypeError, ValueError) as error:
                if not _unsent(error):
                    raise
        # Row by row: SQLite, a table without array forms, values one array cannot take.
        params = self._rows(values, modes, dialect)
        for kept, group in self._by_kept(params, modes).items():
            statement = self._statement(session, kind, values, finish, arrays=False, kept=kept)
            session.execute(statement, group)

    def _by_kept(
        self, rows: list[dict[str, Any]], modes: Columns
    ) -> dict[frozenset[str], list[dict[str, Any]]]:
        """``rows`` by the columns they keep (:data:`KEEP`), each group a statement of its own.

        Its statement reads those columns' stored values and has no parameter for them, so
        their values are not processed (``process_bind_param`` may refuse the value it
        reads back): a flush never processes an unchanged column either, and it too sends
        its UPDATEs in groups by the columns they set. (The rows still hold those values,
        unused: SQLAlchemy takes only the statement's parameters.) The rows are of distinct
        keys, so their order does not matter.
        """
        keeps = [key for key, sql in self.sql.items() if sql.keep]
        if not keeps:
            return {frozenset(): rows}
        groups: dict[frozenset[str], list[dict[str, Any]]] = {}
        for i, row in enumerate(rows):
            kept = frozenset(key for key in keeps if modes[key][i] == KEEP)
            groups.setdefault(kept, []).append(row)
        return groups

    def _arrays(self, session: Session, values: Columns, modes: Columns) -> Columns | None:
        """The values as the arrays take them (types' processing done), or ``None``.

        ``None`` sends them row by row: a type puts SQL around its value or has no array
        form, a processor refuses a value (SQLAlchemy raises it there, as it did), or one
        array cannot take a column's values.
        """
        binds = self._binds_of(session)
        if not self.arrays or binds.wrapped or binds.casts is None:
            return None
        try:
            kept = {key: [mode == KEEP for mode in modes[key]] for key in self.sql}
            arrays = binds.process(values, kept)
        except Exception:  # the row-by-row statement raises it, as SQLAlchemy does
            return None
        kinds = binds.kinds
        if all(uniform(column, kinds[key]) for key, column in arrays.items()):
            return arrays
        return None

    def _statement(
        self,
        session: Session,
        kind: str,
        values: Columns,
        finish: Callable[[Any], Any],
        *,
        arrays: bool,
        kept: frozenset[str] = frozenset(),
    ) -> Any:
        dialect = self._dialect(session)
        cache_key = (f"{kind}:{arrays}:{','.join(values)}:{','.join(sorted(kept))}", dialect)
        statement: Any = self._cache.get(cache_key)
        if statement is None:
            insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(self.table)
            keys = list(values)
            if arrays:
                insert = insert.from_select(keys, self._unnest(keys, session))
            elif self.sql:  # each value a parameter, the sql columns a CASE on their mode
                types = [self.table.c[key].type for key in keys]
                types += [sa.Integer() for _ in self.sql]
                params = [sa.bindparam(f"_c{i}", type_=type_) for i, type_ in enumerate(types)]
                sources = self._sources(keys, params, session.get_bind().dialect, kept)
                insert = insert.values(dict(zip(keys, sources, strict=True)))
            statement = finish(insert)
            if arrays:
                statement = _binary_arrays(statement, len(values) + len(self.sql), session)
            self._cache[cache_key] = statement
        return statement


def _inline(sql: Any, dialect: sa.Dialect | None = None, type_: Any = None) -> Any:
    """``sql`` (a mode number, or a default's SQL) as text in the statement, no parameter.

    The array statement is compiled once and run with the arrays as its only parameters.
    ``type_``: the SQL is cast to it.
    """
    if isinstance(sql, int):
        return sa.literal_column(str(sql))
    text = str(sql.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    if dialect is not None and dialect.identifier_preparer._double_percents:
        text = text.replace("%%", "%")  # the statement's compile doubles them again
    column: Any = sa.literal_column(text)
    return column if type_ is None else sa.cast(column, type_)


def _binary_arrays(statement: Any, count: int, session: Session) -> str:
    """The SQL of ``statement`` with its arrays ``c0..`` sent in binary.

    psycopg dumps a list as a text array element by element in Python (a regex per
    element for quoting; ~15 us per datetime), and as a binary array several times
    faster; SQLAlchemy renders ``%(name)s`` (psycopg picks the text form), so the
    statement is compiled once and its array placeholders switched to ``%(name)b``.
    """
    sql = str(statement.compile(dialect=session.get_bind().dialect))
    for i in range(count):
        placeholder = f"%(c{i})s"
        if sql.count(placeholder) != 1:
            raise AssertionError(f"array placeholder {placeholder} not once in: {sql}")
        sql = sql.replace(placeholder, f"%(c{i})b")
    return sql
