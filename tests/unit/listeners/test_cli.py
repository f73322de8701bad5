"""The CLI without services: --help has no side effects, mistakes give one error line."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from listeners._cli import main
from tests.unit.listeners.test_processor import _names_the_commands, quoted_commands

ROOT = Path(__file__).resolve().parents[3]


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # nothing may reach a broker
    }
    env.pop("LISTENER_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "listeners", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_worker_help_has_no_side_effects(tmp_path: Path) -> None:
    done = _run(tmp_path, "worker", "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: python -m listeners worker" in done.stdout
    assert list(tmp_path.iterdir()) == []  # no orders.db, no data dir


@pytest.mark.parametrize("command", ["migrate", "replay", "get", "list", "revision"])
def test_help_of_every_command_has_no_side_effects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert list(tmp_path.iterdir()) == []


def _main(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.delenv("LISTENER_DATABASE_URL", raising=False)
    return main(list(args))


def test_unknown_listener_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _main(tmp_path, monkeypatch, "get", "no_such_module:thing", "k1") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: listener 'no_such_module:thing': cannot import module")
    assert list(tmp_path.iterdir()) == []


def test_worker_refuses_a_schema_behind_and_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fix is the exact `migrate` of every listener behind, with their database (was:
    `python -m listeners migrate` "with the same listeners and database URL")."""
    shared = "sqlite:///trips.db"
    monkeypatch.setenv("LISTENER_DATABASE_URLS", f'{{"trips": "{shared}", "orders": "{shared}"}}')
    code = _main(tmp_path, monkeypatch, "worker", "orders", "examples.trips:trips", "-l", "info")
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: listener 'orders': database sqlite:///trips.db is at revision")
    assert "listener 'trips': database sqlite:///trips.db is at revision" in err
    migrate = ["python", "-m", "listeners", "migrate", "orders", "examples.trips:trips"]
    assert quoted_commands(err) == [[*migrate, "--database-url", shared]]
    assert _main(tmp_path, monkeypatch, *quoted_commands(err)[0][3:]) == 0  # runs as quoted
    out = capsys.readouterr().out
    assert "listener 'trips': database sqlite:///trips.db is at head" in out
    assert "listener 'orders': database sqlite:///trips.db is at head" in out


def _get_migrated_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alter: str = "") -> int:
    """``get`` of trip t-1 from a trips database at head (``alter`` run on it first)."""
    url = "sqlite:///trips.db"
    assert (
        _main(tmp_path, monkeypatch, "migrate", "examples.trips:trips", "--database-url", url) == 0
    )
    if alter:
        with sqlite3.connect(tmp_path / "trips.db") as conn:
            conn.execute(alter)
    return _main(tmp_path, monkeypatch, "get", "examples.trips:trips", "t-1", "--database-url", url)


def test_unknown_key_names_the_listener(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _get_migrated_trip(tmp_path, monkeypatch) == 4
    assert capsys.readouterr().err.startswith("error: trips 't-1' not found")


def test_bad_filter_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "sqlite:///o.db"
    assert _main(tmp_path, monkeypatch, "migrate", "--database-url", url) == 0
    code = _main(
        tmp_path, monkeypatch, "list", "orders", "--where", "colour=red", "--database-url", url
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: orders has no attribute 'colour'")
    assert len(err.strip().splitlines()) == 1


def test_a_query_never_creates_a_database_and_names_migrate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "sqlite:///missing.db"
    assert _main(tmp_path, monkeypatch, "order-status", "42", "--database-url", url) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "missing.db does not exist" in err and "python -m listeners migrate" in err
    assert list(tmp_path.iterdir()) == []


def test_a_query_on_an_unmigrated_database_names_migrate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sqlite3.connect(tmp_path / "empty.db").close()
    url = "sqlite:///empty.db"
    assert _main(tmp_path, monkeypatch, "order-status", "42", "--database-url", url) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: listener 'orders': database sqlite:///empty.db is at revision")
    migrate = ["python", "-m", "listeners", "migrate", "orders", "--database-url", url]
    assert quoted_commands(err) == [migrate]


def test_a_query_on_a_table_lacking_a_model_column_names_it_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused statement, not an outage (was: "database does not answer", exit 6)."""
    # the model has the column, the database not
    assert _get_migrated_trip(tmp_path, monkeypatch, "ALTER TABLE trips DROP COLUMN flight") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: listener database failed: (sqlite3.OperationalError) no such")
    assert "trips.flight" in err
    _names_the_commands(err, "examples.trips:trips", "sqlite:///trips.db")


def test_a_list_of_orders_lacking_a_model_column_names_the_commands_for_orders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "sqlite:///o.db"
    assert _main(tmp_path, monkeypatch, "migrate", "--database-url", url) == 0
    with sqlite3.connect(tmp_path / "o.db") as conn:
        conn.execute("ALTER TABLE orders DROP COLUMN current_step")
    code = _main(tmp_path, monkeypatch, "orders", "--status", "completed", "--database-url", url)
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "current_step" in err
    _names_the_commands(err, "orders", url, rebuild=["orders"])  # a built-in: no revision


def test_a_reader_that_leaves_early_is_not_an_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    assert _run(tmp_path, "migrate", "--database-url", url).returncode == 0
    done = subprocess.run(
        f"{sys.executable} -m listeners --help | head -c 10",
        shell=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_revision_of_a_listener_without_revisions_writes_its_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No migrations directory yet: `revision` makes it and writes the first schema (the
    check that the database is at head comes once the directory exists)."""
    package = tmp_path / "firsts"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from pathlib import Path\n\nfrom listeners import Listener\n"
        "from tests.unit.listeners.test_processor import _Shadow\n\n"
        'firsts = Listener("firsts", model=_Shadow, saga_types={"order_fulfillment"}, '
        'migrations=Path(__file__).parent / "migrations")\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    url = "sqlite:///firsts.db"
    code = _main(
        tmp_path, monkeypatch, "revision", "firsts:firsts", "-m", "first", "--database-url", url
    )
    assert code == 0, capsys.readouterr().err
    assert [p.name for p in (package / "migrations").glob("*_first.py")]
    assert _main(tmp_path, monkeypatch, "migrate", "firsts:firsts", "--database-url", url) == 0
