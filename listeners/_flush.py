"""What an ORM flush writes for a listener's own columns, beyond their attribute values.

The framework writes rows with Core statements (one multi-row upsert per batch), so
SQLAlchemy's unit of work never sees them. For the columns a listener adds to
:class:`~listeners._rows.SagaRow` (the standard ones are always written by the
framework), :class:`FlushRules` does what ``session.add`` and a flush would do:

- **A new row** (an INSERT): a column left ``None`` or never set gets its ``default=``;
  failing that its SQL default (a ``default=`` SQL expression, or ``server_default``),
  evaluated by the server in the INSERT as when the ORM leaves the column out. A type
  for which ``None`` is a value (JSON stores ``None`` as JSON ``null``) keeps a ``None``
  a handler set; never set, it gets its SQL default or SQL ``NULL``.
- **A stored row** (an UPDATE): a column no handler changed (the ORM's history: not
  assigned since the row was loaded, or assigned an equal value) gets its ``onupdate=``
  (a Python value, or a SQL expression the server evaluates), and otherwise keeps its
  stored value. Most values keep it by being written back as they were read. Two kinds
  do not, and are kept by the server instead (the stored value, read in the upsert): a
  TypeDecorator's (its ``process_bind_param`` need not give back what it stored) and a
  JSON column's (serialised again, the text another writer stored would change its
  spacing or number spelling; a ``None`` stands for SQL ``NULL`` and JSON ``null`` alike).

The SQL parts are chosen per row and column by a *mode* (:data:`VALUE`,
:data:`INSERT_DEFAULT`, :data:`ON_UPDATE`, :data:`KEEP`) that the batch statement
carries beside the values (:class:`~listeners._bulk.ColumnSql`).

Unlike a flush, a handler's in-place change of a plain JSON value
(``row.tags.append(x)``) is written too, as is a TypeDecorator's (both seen by comparing
with a copy of the value read), as a flush writes them with ``MutableDict.as_mutable(...)``;
so is one of another mutable value (an ``ARRAY``'s list), being written back.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.sql.schema import DefaultClause

from listeners._arrays import stored_as
from listeners._bulk import INSERT_DEFAULT, KEEP, ON_UPDATE, ColumnSql
from listeners._errors import ListenerConfigError

__all__ = ["FlushRules"]

_MISSING: Any = object()
_STORED = "saga_listener_stored"  # key in InstanceState.info of rows read from the database
_READ = "saga_listener_read"  # ...and of their TypeDecorator and JSON values as read
# Values no handler can change in place: a copy of one is the value itself.
_IMMUTABLE = (str, bytes, int, float, Decimal, datetime, date, time, timedelta, uuid.UUID, Enum)


def _copy(value: Any) -> Any:
    """``value`` as read, kept apart from the one handlers may change in place.

    A loaded row's values are plain (a ``MutableDict`` type's dict is a ``dict``: the
    ORM's load event never ran), so an in-place change (``row.data["k"] = v``) is seen
    by comparing with this copy. ``_MISSING`` if it cannot be copied.
    """
    if value is None or isinstance(value, _IMMUTABLE):
        return value
    try:
        return copy.deepcopy(value)
    except Exception:  # not copyable: an in-place change of it is not seen
        return _MISSING


def _copy_json(value: Any) -> Any:
    """:func:`_copy` of a value a JSON column read.

    Its dicts and lists are copied by hand: a few times cheaper than ``deepcopy``, and
    paid per stored row and batch.
    """
    kind = type(value)
    if kind is dict:
        return {key: _copy_json(item) for key, item in value.items()}
    if kind is list:
        return [_copy_json(item) for item in value]
    return _copy(value)  # a scalar; or what a custom json_deserializer made, deep-copied


def _python(default: Any, col: sa.Column[Any], what: str) -> Callable[[], Any] | None:
    """A Python ``default=`` / ``onupdate=`` as a function of nothing, or ``None``.

    Raises:
        ListenerConfigError: The function takes SQLAlchemy's execution context (rows are
            written with one statement per batch: there is none to give it).
    """
    if default is None or not (default.is_scalar or default.is_callable):
        return None
    if default.is_callable:
        arg = default.arg  # SQLAlchemy wraps a function of no argument to take a context
        if arg is getattr(default, "_fn", None):  # not wrapped: it reads the context
            raise ListenerConfigError(
                f"column {col.table.name}.{col.name}: its {what}= function "
                f"{getattr(arg, '__name__', arg)!r} takes the execution context, which a "
                "listener does not have (each batch is one statement); give it a function "
                "of no argument, or set the value in a handler"
            )
        return lambda: arg(None)
    value = default.arg
    return lambda: value


def _sql(default: Any) -> Any:
    """A SQL-expression ``default=`` / ``onupdate=`` / ``server_default``, or ``None``."""
    if isinstance(default, DefaultClause):  # server_default: a str, text() or expression
        arg = default.arg
        return sa.literal(arg, sa.String()) if isinstance(arg, str) else arg
    if default is not None and default.is_clause_element:
        return default.arg
    return None


def _json(type_: Any) -> bool:
    """Whether ``type_`` stores JSON (itself, or under TypeDecorators)."""
    return isinstance(stored_as(type_), sa.JSON)


@dataclass(frozen=True)
class _Rule:
    attr: str
    key: str
    equal: Callable[[Any, Any], bool]
    default: Callable[[], Any] | None
    insert_sql: Any
    evaluates_none: bool
    onupdate: Callable[[], Any] | None
    update_sql: Any
    ambiguous_none: bool
    #: How a stored value is copied when read, for the columns whose unchanged value the
    #: server keeps (not written back: module docstring); ``None`` for the others.
    read_copy: Callable[[Any], Any] | None

    @property
    def sql(self) -> ColumnSql | None:
        keep = self.ambiguous_none or self.read_copy is not None
        if self.insert_sql is None and self.update_sql is None and not keep:
            return None
        return ColumnSql(insert=self.insert_sql, update=self.update_sql, keep=keep)

    @classmethod
    def of(cls, attr: str, col: sa.Column[Any]) -> _Rule | None:
        if col.computed is not None or col.identity is not None:
            # every batch writes the column: the server refuses a value there (or NULL)
            what = "Computed" if col.computed is not None else "Identity"
            raise ListenerConfigError(
                f"column {col.table.name}.{col.name}: a {what} column is filled by the "
                "database, and a listener writes every column of its rows; fill it in a "
                "handler, or keep it in a table or view of its own"
            )
        default = _python(col.default, col, "default")
        insert_sql = None if default is not None else _sql(col.default)
        if default is None and insert_sql is None:
            insert_sql = _sql(col.server_default)
        evaluates_none = bool(col.type.should_evaluate_none)
        if insert_sql is None and evaluates_none:
            insert_sql = sa.null()  # never set: the ORM leaves it out, the column is NULL
        onupdate = _python(col.onupdate, col, "onupdate")
        update_sql = None if onupdate is not None else _sql(col.onupdate)
        ambiguous_none = evaluates_none or _json(col.type)
        read_copy = None
        if isinstance(col.type, sa.TypeDecorator):
            read_copy = _copy  # whatever its process_result_value makes
        elif _json(col.type):
            read_copy = _copy_json
        sql = insert_sql is not None or update_sql is not None
        if not (default or onupdate or sql or ambiguous_none or read_copy):
            return None
        return cls(
            attr=attr,
            key=col.key,
            equal=col.type.compare_values,
            default=default,
            insert_sql=insert_sql,
            evaluates_none=evaluates_none,
            onupdate=onupdate,
            update_sql=update_sql,
            ambiguous_none=ambiguous_none,
            read_copy=read_copy,
        )


class FlushRules:
    """The flush behaviour of a listener's own columns (see the module docstring).

    Args:
        columns: Model attribute -> table column, the listener's own columns only.
    """

    def __init__(self, columns: Mapping[str, sa.Column[Any]]) -> None:
        rules = (_Rule.of(attr, col) for attr, col in columns.items())
        self._rules = tuple(rule for rule in rules if rule is not None)
        #: Column key -> the SQL its value may be replaced by (for the batch statement).
        self.sql: Mapping[str, ColumnSql] = {
            rule.key: sql for rule in self._rules if (sql := rule.sql) is not None
        }
        #: (attribute, copier) of the kept columns, whose stored values are copied at load.
        self._kept = tuple(
            (rule.attr, rule.read_copy) for rule in self._rules if rule.read_copy is not None
        )

    def __bool__(self) -> bool:
        return bool(self._rules)

    def stored(self, rows: Iterable[Any]) -> None:
        """Mark ``rows`` as read from the database: writing them is an UPDATE."""
        kept = self._kept
        for row in rows:
            info = instance_state(row).info
            info[_STORED] = True
            if kept:
                fields = row.__dict__
                info[_READ] = {attr: read_copy(fields.get(attr)) for attr, read_copy in kept}

    def settle(self, rows: Sequence[Any], values: dict[str, list[Any]]) -> dict[str, list[int]]:
        """Put defaults and ``onupdate`` values into ``values``; return the modes.

        Args:
            rows: The rows to write.
            values: Column key -> the rows' attribute values (changed in place).

        Returns:
            Column key -> the mode of each row, for every column of :attr:`sql`.
        """
        modes = {key: [0] * len(rows) for key in self.sql}
        for i, row in enumerate(rows):
            state = instance_state(row)
            fields = row.__dict__
            if state.info.get(_STORED):
                committed = state.committed_state
                read = state.info.get(_READ, {})
                for rule in self._rules:
                    attr = rule.attr
                    if attr in committed and not rule.equal(committed[attr], fields.get(attr)):
                        continue  # a handler changed it: the ORM writes the new value
                    was = read.get(attr, _MISSING)
                    if was is not _MISSING and not rule.equal(was, fields.get(attr)):
                        continue  # changed in place (a MutableDict's flush writes it too)
                    if rule.onupdate is not None:
                        values[rule.key][i] = rule.onupdate()
                    elif rule.update_sql is not None:
                        modes[rule.key][i] = ON_UPDATE
                    elif rule.read_copy or (rule.ambiguous_none and fields.get(attr) is None):
                        modes[rule.key][i] = KEEP  # the server reads it; the value is not processed
                continue
            for rule in self._rules:
                value = fields.get(rule.attr, _MISSING)
                if value is not _MISSING and (value is not None or rule.evaluates_none):
                    continue  # a value the ORM sends as it is
                if rule.default is not None:
                    values[rule.key][i] = rule.default()
                elif rule.insert_sql is not None:
                    modes[rule.key][i] = INSERT_DEFAULT
        return modes
