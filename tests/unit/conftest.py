from __future__ import annotations

import pytest

from coordinator import events as ev
from tests.unit.event_check import checked_event_json


@pytest.fixture(autouse=True)
def _events_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every event written with ``event_json`` (the state machine's) is validated."""
    monkeypatch.setattr(ev, "event_json", checked_event_json)
