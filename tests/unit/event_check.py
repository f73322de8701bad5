"""Every lifecycle event a unit test emits is read back and must be written the same.

``events.event_json`` writes an event without building (so without validating) the model.
In the unit suite every call is checked: the JSON is parsed with ``parse_event`` and
written again by the model; a field the model would refuse (``seq=0``), coerce
(``attempt=True``), fill (an ``error`` dict without its defaults) or drop (an ErrorInfo
subclass's extra fields) makes the test fail where the event was emitted.
"""

from __future__ import annotations

from typing import Any

from coordinator import events as ev

_unchecked = ev.event_json


def checked_event_json(kind: type[Any], **fields: Any) -> str:
    """``ev.event_json``, asserting its JSON is a valid ``kind`` that the model writes alike."""
    written = _unchecked(kind, **fields)
    event = ev.parse_event(written)
    again = event.model_dump_json()
    assert type(event) is kind and again == written, (
        f"event_json wrote a {kind.__name__} the model would not write:\n"
        f"  event_json: {written}\n  the model:  {again}"
    )
    return written
