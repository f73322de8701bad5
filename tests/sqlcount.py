"""Count SQL statements at the driver (what the database actually receives)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event


@dataclass
class SqlCount:
    statements: int = 0  # an executemany counts as one
    rows: int = 0  # parameter sets sent (executemany: one per row)
    commits: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        self.statements = self.rows = self.commits = 0
        self.kinds.clear()


@contextmanager
def count_sql(engine: sa.Engine) -> Iterator[SqlCount]:
    counted = SqlCount()

    def before(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        counted.statements += 1
        counted.rows += len(params) if many else 1
        kind = statement.lstrip().split(None, 1)[0].upper()
        counted.kinds[kind] = counted.kinds.get(kind, 0) + 1

    def commit(conn: Any) -> None:
        counted.commits += 1

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "commit", commit)
    try:
        yield counted
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "commit", commit)
