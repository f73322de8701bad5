"""The events listeners see: the coordinator's typed events, or a generic one.

The coordinator may add lifecycle event types at any time (``step_late_success``,
``saga_parked``, ...). A listener must not dead-letter a well-formed event only because
the installed :mod:`coordinator.events` does not know its type yet: such an event is
decoded as a :class:`GenericEvent` (the common envelope, type as a plain string), goes
to the timeline and to "any event" handlers, and moves ``seq`` like any other.
"""

from __future__ import annotations

import json
from typing import Any, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from coordinator.events import ErrorInfo, LifecycleEvent, parse_event

__all__ = ["KNOWN_TYPES", "Event", "GenericEvent", "parse_any_event", "validate_any_event"]


def _known_types() -> frozenset[str]:
    union = get_args(LifecycleEvent)[0]
    return frozenset(str(model.model_fields["type"].default) for model in get_args(union))


#: Event types the installed coordinator schema models (anything else is generic).
KNOWN_TYPES = _known_types()


class GenericEvent(BaseModel):
    """A well-formed lifecycle event of a type this install does not model.

    It has the envelope every event carries; fields it does not know are kept in
    ``model_extra`` and never rejected.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    schema_version: int = 1
    event_id: str
    saga_id: str
    saga_type: str
    saga_version: int
    seq: int = Field(ge=1)
    type: str = Field(min_length=1)
    occurred_at: AwareDatetime
    business_key: str | None = None
    step: str | None = None
    service: str | None = None
    attempt: int | None = None
    data: dict[str, Any] | None = None
    error: ErrorInfo | None = None

    def to_json(self) -> bytes:
        """The event as JSON bytes (as it travels on the lifecycle topic)."""
        return self.model_dump_json().encode()


#: What a handler receives.
Event = LifecycleEvent | GenericEvent


_ADAPTER: TypeAdapter[LifecycleEvent] = TypeAdapter(LifecycleEvent)


def validate_any_event(value: Any) -> Event:
    """Like :func:`parse_any_event`, for an event already decoded from JSON (a dict).

    Raises:
        pydantic.ValidationError: not an event envelope, or a known type whose fields
            are invalid.
    """
    try:
        return _ADAPTER.validate_python(value)
    except ValidationError:
        kind = value.get("type") if isinstance(value, dict) else None
        if not isinstance(kind, str) or kind in KNOWN_TYPES:
            raise
    return GenericEvent.model_validate(value)


def parse_any_event(raw: bytes | str) -> Event:
    """Decode one lifecycle event, typed if its type is known, generic otherwise.

    Raises:
        pydantic.ValidationError: not JSON, not an event envelope, or a known type
            whose fields are invalid.
    """
    try:
        return parse_event(raw)
    except ValidationError:
        kind = _type_of(raw)
        if kind is None or kind in KNOWN_TYPES:
            raise
    return GenericEvent.model_validate_json(raw)


def _type_of(raw: bytes | str) -> str | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) else None
