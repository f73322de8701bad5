"""The README's "Write your own listener" example is complete, short, and works."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from listeners import Listener, create_db_engine, get_entity, session_factory
from listeners._processor import commit_batch
from tests.trip_events import trip_saga

README = Path(__file__).resolve().parents[3] / "README.md"


def _example() -> str:
    text = README.read_text()
    section = text[text.index("## Write your own listener") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_readme_listener_is_at_most_40_lines_and_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = _example()
    assert len(code.splitlines()) <= 40
    module = types.ModuleType("readme_trips")
    module.__file__ = str(tmp_path / "readme_trips.py")
    monkeypatch.setitem(sys.modules, "readme_trips", module)
    exec(compile(code, module.__file__, "exec"), module.__dict__)
    trips: Listener[object] = module.trips  # type: ignore[assignment]
    assert trips.migrations == tmp_path / "migrations"
    engine = create_db_engine("sqlite://")
    try:
        trips.table.metadata.create_all(engine)
        sessions = session_factory(engine)
        failed = trip_saga("s1", "T-7", "hotel_failed")
        commit_batch(sessions, [trips], failed + trip_saga("s2", "T-8", "completed"))
        with sessions() as session:
            t7, t8 = get_entity(session, trips, "T-7"), get_entity(session, trips, "T-8")
    finally:
        engine.dispose()
    assert (t7.status, t7.fields["flight"], t7.last_error) == (
        "compensated",
        None,
        "NoRooms: hotel full",
    )
    assert (t8.status, t8.fields["flight"], t8.fields["destination"]) == (
        "completed",
        "R0",
        "Lisbon",
    )
    assert t8.fields["confirmed_at"] == t8.updated_at
