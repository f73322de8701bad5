"""Which values one PostgreSQL array takes as SQLAlchemy would send them one by one.

For each column of a table, on one dialect: the processing SQLAlchemy applies to a value
before the driver sees it (the dialect implementation's ``bind_processor``: a Boolean's
strictness check, an Enum's name, JSON's wrapper, a TypeDecorator's
``process_bind_param`` then its ``impl``'s), the type the array of processed values is
cast to, and the Python types one array dumper takes (:class:`Binds`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from psycopg.types.json import Json, Jsonb

__all__ = ["Binds", "Columns", "array_type", "stored_as", "unbounded", "uniform"]

#: column key -> one value per row
Columns = Mapping[str, Sequence[Any]]

# Types psycopg sends as arrays the server casts back element by element, as it would
# the single value (a TypeDecorator counts as the type it stores its values in; Enum is a
# String, cast to its own type when native). Left out, so their tables go row by row:
# ARRAY (a list value becomes one more dimension of the array, and unnest flattens every
# dimension: the rows would no longer line up), and every type not checked against
# session.add value by value (LargeBinary, INET, HSTORE, ranges, ...). A type whose
# bind_expression puts SQL around each value goes row by row as well (see Binds.wrapped).
_ARRAY_TYPES = (
    sa.String,
    sa.Integer,
    sa.Boolean,
    sa.Numeric,
    sa.Float,
    sa.DateTime,
    sa.Date,
    sa.Time,
    sa.Interval,
    sa.Uuid,
    sa.JSON,
)


def unbounded(type_: Any) -> Any:
    """``type_`` without a length or precision, for an array cast.

    PostgreSQL cuts a value silently on an explicit cast to ``varchar(n)`` (and rounds
    on ``numeric(p, s)``), so the arrays are cast to the unbounded type and the INSERT's
    own assignment to the column checks the value (``value too long`` as before).
    """
    if isinstance(type_, sa.Enum):  # a native enum is cast to itself, else to VARCHAR
        return type_ if type_.native_enum else sa.String()
    if isinstance(type_, sa.String):
        return sa.String()
    if isinstance(type_, sa.Float):
        return sa.Float()
    if isinstance(type_, sa.Numeric):
        return sa.Numeric()
    return type_


def _kinds(type_: Any) -> tuple[type, ...]:
    """The Python types an array of ``type_`` is sent as (one element dumper per list)."""
    for sql_type, kinds in _KINDS:
        if isinstance(type_, sql_type):
            return kinds
    return ()


_KINDS: tuple[tuple[type, tuple[type, ...]], ...] = (
    (sa.Boolean, (bool,)),
    (sa.Integer, (int,)),
    (sa.Float, (float,)),
    (sa.Numeric, (Decimal, int, float)),
    (sa.String, (str,)),
    (sa.DateTime, (datetime,)),
    (sa.Date, (date,)),
    (sa.Time, (time,)),
    (sa.Interval, (timedelta,)),
    (sa.Uuid, (uuid.UUID, str)),
    (sa.JSON, (Json, Jsonb)),  # SQLAlchemy's psycopg dialect wraps JSON values in these
)


def uniform(column: Sequence[Any], kinds: tuple[type, ...]) -> bool:
    """Whether one array dumper and one cast take the values as they were taken one by one.

    That is: the values (``None`` aside) are of ONE type of ``kinds``, datetimes (times)
    all naive or all aware. Mixed ones (``10`` and ``10.5``, ``1`` for a Boolean, a list
    for a String) go row by row instead.
    """
    seen = set(map(type, column))
    seen.discard(type(None))
    if len(seen) != 1:
        return not seen
    kind = seen.pop()
    if kind not in kinds:
        return False
    if kind is datetime or kind is time:
        return len({value.tzinfo is None for value in column if value is not None}) == 1
    return True


def array_type(type_: Any) -> bool:
    return isinstance(type_, _ARRAY_TYPES)


def stored_as(type_: Any) -> Any:
    """The type ``type_`` hands its values to: itself, or a TypeDecorator's ``impl``."""
    while isinstance(type_, sa.TypeDecorator):
        type_ = type_.impl_instance
    return type_


Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class Binds:
    """What SQLAlchemy does to a table's values on one dialect before the driver sees them.

    Attributes:
        wrapped: Keys of the columns whose type puts SQL around the value (the dialect
            implementation's ``bind_expression``, e.g. ``lower(%s)``); arrays skip it.
        processors: Column key -> the type's ``bind_processor`` (the dialect's
            implementation's: on psycopg a ``String`` subclass is replaced by the driver's
            own string type, and its processor is not called row by row either; a
            TypeDecorator's runs its ``process_bind_param``, then its ``impl``'s).
        casts: Column key -> the element type its array is cast to (the type the
            processed values are for), or ``None`` when a column has no array form.
        kinds: Column key -> the Python types its processed values may have.
    """

    wrapped: frozenset[str]
    processors: Mapping[str, Processor]
    casts: Mapping[str, Any] | None
    kinds: Mapping[str, tuple[type, ...]]

    @classmethod
    def of(cls, table: sa.Table, dialect: sa.Dialect) -> Binds:
        impls = {col.key: col.type.dialect_impl(dialect) for col in table.columns}
        processors = {key: impl.bind_processor(dialect) for key, impl in impls.items()}
        stored = {key: stored_as(impl) for key, impl in impls.items()}
        array_safe = all(array_type(type_) for type_ in stored.values())
        return cls(
            wrapped=frozenset(key for key, impl in impls.items() if impl._has_bind_expression),
            processors={key: proc for key, proc in processors.items() if proc is not None},
            casts={key: unbounded(type_) for key, type_ in stored.items()} if array_safe else None,
            kinds={key: _kinds(type_) for key, type_ in stored.items()},
        )

    def process(self, values: Columns, unused: Mapping[str, Sequence[bool]]) -> Columns:
        """``values`` as the driver gets them row by row (raises what a processor raises).

        ``unused``: column key -> per row, whether the statement ignores its value (the
        server keeps the stored one): ``None`` is sent, unprocessed, as a flush does not
        process an unchanged value (``process_bind_param`` may refuse the value read).
        """
        if not self.processors:
            return values
        processors = self.processors
        processed = {}
        for key, column in values.items():
            process = processors.get(key)
            skip = unused.get(key)
            if process is None:
                processed[key] = column
            elif skip is None:
                processed[key] = list(map(process, column))
            else:
                processed[key] = [
                    None if unused_value else process(value)
                    for value, unused_value in zip(column, skip, strict=True)
                ]
        return processed
