"""Architecture boundaries: the coordinator runs zero SQL (its surface: test_exported_members)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SQL_MODULES = {"sqlalchemy", "psycopg", "psycopg2", "sqlite3", "_sqlite3", "alembic", "asyncpg"}


def test_coordinator_imports_no_sql_library_at_runtime() -> None:
    code = (
        "import sys, coordinator, coordinator._app, coordinator._client, coordinator.testing, "
        "coordinator.__main__; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(SQL_MODULES)!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def test_coordinator_and_compensations_sources_import_no_sql_or_listeners() -> None:
    offenders = []
    for package in ("coordinator", "compensations"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    root = name.split(".")[0]
                    if (
                        root in SQL_MODULES
                        or root == "listeners"
                        or (package == "compensations" and root == "coordinator")
                    ):
                        offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def test_order_saga_definition_fits_on_one_screen() -> None:
    source = (ROOT / "examples/order_fulfillment/saga.py").read_text().splitlines()
    start = next(i for i, line in enumerate(source) if line.startswith("SHIPPING_RETRY = "))
    end = next(i for i, line in enumerate(source) if line.startswith("])"))
    assert end - start + 1 <= 40
