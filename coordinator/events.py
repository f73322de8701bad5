"""Lifecycle events: the coordinator's public contract (JSON on the lifecycle topic).

Every event carries ``event_id``, ``saga_id``, ``saga_type``, ``saga_version``, ``seq``
(strictly increasing by one per saga, starting at 1), ``type``, ``occurred_at``, and,
where it applies, ``business_key``, ``step``, ``service``, ``attempt``, ``data`` and
``error``. Consumers apply an event only if its ``seq`` is newer than the one they stored
for that saga; ``event_id`` is ``"{saga_id}:{seq}"`` so a re-sent event is recognisable.

Event types and when they are emitted::

    saga_started              a new saga was accepted (data: the saga input)
    step_started              a step request (attempt N) was sent to its service
    step_succeeded            the step's action returned (data: its output)
    step_failed               an attempt failed; ``retrying`` says whether another follows;
                              ``error.uncertain`` says whether its effect may have happened
    step_late_success         a success arrived for an attempt no longer awaited (data:
                              output, and ``compensation``: covered | scheduled | none)
    saga_parked               resting: a step's outcome is uncertain and the step chose
                              ``on_uncertain="park"``; an operator resolves it
    step_resolved             an operator resolved a parked step
                              (data.resolution: applied | not_applied | retry)
    saga_compensating         unwinding began
                              (data.reason: step_failed | cancelled | operator_retry |
                              late_success; data.plan: the compensations, in order)
    compensation_started      a compensation request (attempt N) was sent
    compensation_succeeded    a compensation finished
    compensation_failed       a compensation attempt failed; ``retrying`` as above
    saga_completed            terminal: every step succeeded
    saga_compensated          terminal: a step failed and every completed step was compensated
    saga_cancelled            terminal: cancelled by an operator and compensated
    saga_compensation_failed  resting: a compensation exhausted its retries; an operator may retry

Records on the topic come in two forms, both keyed by the saga id (read them with
:func:`parse_events`, which accepts either)::

    one event     {"schema_version": 1, "event_id": "s1:4", "seq": 4, "type": ..., ...}
    a batch       {"schema_version": 1, "saga_id": "s1", "events": [{event}, {event}, ...]}

A **batch** (:class:`EventBatch`) carries the events one saga emitted while the
coordinator applied one batch of its inbox, in ``seq`` order (strictly increasing), each
exactly as it would travel alone. It is told apart from a single event by its
``"events"`` array (an event has a ``"type"`` and never an ``"events"`` field); its
``schema_version`` (:data:`BATCH_SCHEMA_VERSION`) versions the envelope, each event's own
``schema_version`` versions the event. Why a JSON envelope rather than a record header:
it travels with the value through every tool that copies values (console consumers,
dead letters, mirrors, replays into files), a listener in any language tells the forms
apart with its JSON parser alone, and a JSON Schema describes it
(``coordinator/schemas/lifecycle-record.schema.json``).

Batching saves Kafka records, not meaning: a consumer applies each event by its ``seq``
as before, and a re-sent outbox (after a crash) may group the same events differently,
which the ``seq`` guard absorbs. ``SAGA_LIFECYCLE_FORMAT=single`` makes the coordinator
write one event per record, as before batching. A batch record is never
larger than :data:`LIFECYCLE_BATCH_BYTES`: an event too large to share a record travels
alone, in the single form, so no record is larger than a single event could be.

Dead letters (``DeadLetter``), the topic names (``Topics``) and the default broker address
share this module because every agent, listeners included, writes or reads them.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import to_json

from coordinator._errors import LifecycleRecordError

SCHEMA_VERSION = 1
#: version of the batch envelope ``{"schema_version", "saga_id", "events"}``
BATCH_SCHEMA_VERSION = 1
#: most bytes of a record carrying several events; a larger event travels alone
LIFECYCLE_BATCH_BYTES = 64 * 1024

__all__ = [
    "BATCH_SCHEMA_VERSION",
    "DEAD_LETTER_VALUE_LIMIT",
    "DEFAULT_BOOTSTRAP_SERVERS",
    "LIFECYCLE_BATCH_BYTES",
    "SCHEMA_VERSION",
    "TERMINAL_EVENT_TYPES",
    "CompensationFailed",
    "CompensationStarted",
    "CompensationSucceeded",
    "DeadLetter",
    "ErrorInfo",
    "EventBatch",
    "LifecycleEvent",
    "LifecycleRecordError",
    "SagaCancelled",
    "SagaCompensated",
    "SagaCompensating",
    "SagaCompensationFailed",
    "SagaCompleted",
    "SagaParked",
    "SagaStarted",
    "StepFailed",
    "StepLateSuccess",
    "StepResolved",
    "StepStarted",
    "StepSucceeded",
    "Topics",
    "parse_event",
    "parse_events",
    "unpack_record",
]


class ErrorInfo(BaseModel):
    """Why an attempt failed.

    ``retryable=False`` marks a failure no further attempt can fix (a business failure).
    ``uncertain=True`` says the participant's effect may have happened (timeout, 5xx, lost
    reply); ``False`` says the participant states that nothing happened.
    """

    model_config = ConfigDict(frozen=True)

    type: str
    message: str
    retryable: bool = True
    uncertain: bool = False


class _EventBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    event_id: str
    saga_id: str
    saga_type: str
    saga_version: int
    seq: int = Field(ge=1)
    occurred_at: datetime
    business_key: str | None = None
    step: str | None = None
    service: str | None = None
    attempt: int | None = None
    data: dict[str, Any] | None = None
    error: ErrorInfo | None = None

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class SagaStarted(_EventBase):
    """A new saga was accepted (data: the saga input)."""

    type: Literal["saga_started"] = "saga_started"


class StepStarted(_EventBase):
    """A step request (attempt N) was sent to its service."""

    type: Literal["step_started"] = "step_started"


class StepSucceeded(_EventBase):
    """The step's action returned (data: its output)."""

    type: Literal["step_succeeded"] = "step_succeeded"


class StepFailed(_EventBase):
    """An attempt failed; ``retrying`` says whether another follows."""

    type: Literal["step_failed"] = "step_failed"
    retrying: bool = False


class StepLateSuccess(_EventBase):
    """A success arrived for an attempt no longer awaited."""

    type: Literal["step_late_success"] = "step_late_success"


class SagaParked(_EventBase):
    """Resting: a step's outcome is uncertain and it chose to park."""

    type: Literal["saga_parked"] = "saga_parked"


class StepResolved(_EventBase):
    """An operator resolved a parked step (data.resolution)."""

    type: Literal["step_resolved"] = "step_resolved"


class SagaCompensating(_EventBase):
    """Unwinding began (data.reason, data.plan)."""

    type: Literal["saga_compensating"] = "saga_compensating"


class CompensationStarted(_EventBase):
    """A compensation request (attempt N) was sent."""

    type: Literal["compensation_started"] = "compensation_started"


class CompensationSucceeded(_EventBase):
    """A compensation finished."""

    type: Literal["compensation_succeeded"] = "compensation_succeeded"


class CompensationFailed(_EventBase):
    """A compensation attempt failed; ``retrying`` says whether another follows."""

    type: Literal["compensation_failed"] = "compensation_failed"
    retrying: bool = False


class SagaCompleted(_EventBase):
    """Terminal: every step succeeded."""

    type: Literal["saga_completed"] = "saga_completed"


class SagaCompensated(_EventBase):
    """Terminal: a step failed and every step that happened was compensated."""

    type: Literal["saga_compensated"] = "saga_compensated"


class SagaCancelled(_EventBase):
    """Terminal: cancelled by an operator and compensated."""

    type: Literal["saga_cancelled"] = "saga_cancelled"


class SagaCompensationFailed(_EventBase):
    """Resting: a compensation exhausted its retries; an operator may retry."""

    type: Literal["saga_compensation_failed"] = "saga_compensation_failed"


LifecycleEvent = Annotated[
    SagaStarted
    | StepStarted
    | StepSucceeded
    | StepFailed
    | StepLateSuccess
    | SagaParked
    | StepResolved
    | SagaCompensating
    | CompensationStarted
    | CompensationSucceeded
    | CompensationFailed
    | SagaCompleted
    | SagaCompensated
    | SagaCancelled
    | SagaCompensationFailed,
    Field(discriminator="type"),
]

TERMINAL_EVENT_TYPES = frozenset({"saga_completed", "saga_compensated", "saga_cancelled"})

_ADAPTER: TypeAdapter[LifecycleEvent] = TypeAdapter(LifecycleEvent)


def parse_event(raw: bytes | str) -> LifecycleEvent:
    """Decode one lifecycle event; raises ``pydantic.ValidationError`` on bad input.

    A record on the lifecycle topic may carry several events: read records with
    :func:`parse_events`.
    """
    return _ADAPTER.validate_json(raw)


#: per event class: its fields in serialisation order, with their defaults
_TEMPLATES: dict[type[_EventBase], dict[str, Any]] = {}


def event_json(kind: type[_EventBase], **fields: Any) -> str:
    """``kind(**fields).model_dump_json()``, byte for byte, without building the model.

    For the state machine, whose fields are its own typed values: building and dumping
    the model cost about three times as much. Nothing is validated but the field names
    (the machine's tests read every event back with ``parse_event``). A NaN or infinite
    float (a participant's output, a saga's input) is written ``null``, as the model's
    ``ser_json_inf_nan="null"`` does: JSON has no NaN, and readers in other languages
    refuse the record.

    Raises:
        TypeError: a field ``kind`` does not have.
    """
    values = _TEMPLATES.get(kind)
    if values is None:
        values = _TEMPLATES[kind] = {n: f.default for n, f in kind.model_fields.items()}
    event = values | fields
    if len(event) != len(values):
        raise TypeError(f"{kind.__name__} has no field {sorted(fields.keys() - values.keys())}")
    return to_json(event, inf_nan_mode="null").decode()


class EventBatch(BaseModel):
    """The batch form of a lifecycle record: one saga's events of one coordinator batch.

    ``events`` are in ``seq`` order, strictly increasing, each exactly as it would travel
    alone; the record is keyed by ``saga_id`` like every lifecycle record.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = BATCH_SCHEMA_VERSION
    saga_id: str
    events: list[LifecycleEvent] = Field(min_length=1)

    def to_json(self) -> bytes:
        """The batch as JSON bytes (as it travels on the lifecycle topic)."""
        return self.model_dump_json().encode()


def unpack_record(raw: bytes | str) -> tuple[str | None, list[Any]]:
    """Split a lifecycle record into its events, as JSON values, without validating them.

    Returns ``(saga_id, events)``: the envelope's saga id and its events for the batch
    form, ``(None, [event])`` for a single event. For readers that validate each event
    themselves (the listeners dead-letter one invalid event and apply the others).

    Raises:
        LifecycleRecordError: not JSON, not an object, a batch envelope that is malformed
            or newer than :data:`BATCH_SCHEMA_VERSION`.
    """
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise LifecycleRecordError(f"lifecycle record is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise LifecycleRecordError(
            f"lifecycle record is a JSON {type(value).__name__}, not an object (an event, "
            'or a batch {"schema_version", "saga_id", "events"})'
        )
    if "events" not in value:
        return None, [value]
    version, saga_id, events = value.get("schema_version"), value.get("saga_id"), value["events"]
    if not isinstance(version, int) or version > BATCH_SCHEMA_VERSION or version < 1:
        raise LifecycleRecordError(
            f"lifecycle batch record has schema_version {version!r}; this reader knows "
            f"batch versions 1..{BATCH_SCHEMA_VERSION}: upgrade saga-coordinator"
        )
    extra = sorted(set(value) - {"schema_version", "saga_id", "events"})
    if not isinstance(saga_id, str) or not isinstance(events, list) or not events or extra:
        raise LifecycleRecordError(
            'lifecycle batch record must be exactly {"schema_version": int, "saga_id": '
            f'str, "events": [at least one event]}}; got saga_id {saga_id!r}, events of '
            f"type {type(events).__name__}{f', unknown fields {extra}' if extra else ''}"
        )
    return saga_id, events


def parse_events(raw: bytes | str) -> list[LifecycleEvent]:
    """Decode a lifecycle record, in either form, into its events in ``seq`` order.

    Accepts a single event (records written before batching, or with
    ``SAGA_LIFECYCLE_FORMAT=single``) and a batch (:class:`EventBatch`).

    Raises:
        LifecycleRecordError: the record is neither form, or an event inside is invalid
            (named by its position; the ``pydantic.ValidationError`` is the cause), or
            the batch's events are out of ``seq`` order or belong to another saga.
    """
    fast = _parse_valid(raw)
    if fast is not None:
        return fast
    saga_id, items = unpack_record(raw)  # something is wrong: find what, and say it
    if saga_id is None:
        try:
            return [_ADAPTER.validate_python(items[0])]
        except ValidationError as exc:
            raise LifecycleRecordError(f"not a valid lifecycle event: {exc}") from exc
    events: list[LifecycleEvent] = []
    for i, item in enumerate(items, 1):
        try:
            events.append(_ADAPTER.validate_python(item))
        except ValidationError as exc:
            raise LifecycleRecordError(
                f"event {i} of {len(items)} in the batch record of saga {saga_id!r} is not a "
                f"valid lifecycle event: {exc}"
            ) from exc
    _check_batch(saga_id, events)
    return events


def _parse_valid(raw: bytes | str) -> list[LifecycleEvent] | None:
    """The events of a valid record, decoded straight from its bytes; None if anything is off.

    The caller then finds out what. Cheaper than ``json.loads`` and validating each event.
    """
    try:
        if ('"events"' in raw) if isinstance(raw, str) else (b'"events"' in raw):
            batch = EventBatch.model_validate_json(raw)
        else:
            return [_ADAPTER.validate_json(raw)]
    except ValidationError:
        return None  # (an event may also mention "events" in its data: the slow path knows)
    if not 1 <= batch.schema_version <= BATCH_SCHEMA_VERSION:
        return None
    try:
        _check_batch(batch.saga_id, batch.events)
    except LifecycleRecordError:
        return None
    return batch.events


def _check_batch(saga_id: str, events: list[LifecycleEvent]) -> None:
    """Every event is of ``saga_id`` and ``seq`` strictly increases."""
    for i, event in enumerate(events, 1):
        if event.saga_id != saga_id:
            raise LifecycleRecordError(
                f"event {i} of {len(events)} in the batch record of saga {saga_id!r} belongs "
                f"to saga {event.saga_id!r}: a batch carries one saga's events"
            )
        if i > 1 and event.seq <= events[i - 2].seq:
            raise LifecycleRecordError(
                f"event {i} of {len(events)} in the batch record of saga {saga_id!r} has seq "
                f"{event.seq} after seq {events[i - 2].seq}: seq must strictly increase"
            )


#: the broker when neither ``SAGA_KAFKA_BOOTSTRAP_SERVERS`` nor ``KAFKA_BOOTSTRAP_SERVERS``
#: names one: the project's local broker (``make kafka-up``)
DEFAULT_BOOTSTRAP_SERVERS = "127.0.0.1:19092"


class Topics:
    """Topic names derived from one prefix; no topic string lives anywhere else.

    Args:
        prefix: the deployment's topic prefix (``SAGA_TOPIC_PREFIX``).
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.inbox = f"{prefix}.inbox"
        self.lifecycle = f"{prefix}.lifecycle"
        self.deadletters = f"{prefix}.deadletters"

    def step(self, service: str) -> str:
        """The step-request topic of ``service``."""
        return f"{self.prefix}.step.{service}"


#: most bytes of the original value a dead letter keeps: a 5 MB record would make the
#: dead letter itself too large for the broker (base64 makes the kept bytes 4/3 larger)
DEAD_LETTER_VALUE_LIMIT = 64 * 1024


class DeadLetter(BaseModel):
    """A message an agent could not use, kept with the reason (never silently dropped).

    ``truncated`` says the original value was larger than :data:`DEAD_LETTER_VALUE_LIMIT`
    and ``value_b64`` keeps only its first bytes (``original_size`` is the whole size): such
    a dead letter cannot be re-submitted. Build one with :meth:`of`.
    """

    model_config = ConfigDict(frozen=True)

    source_topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    value_b64: str
    reason: str
    error_type: str
    agent: str
    occurred_at: datetime
    truncated: bool = False
    original_size: int | None = None

    @classmethod
    def of(
        cls, value: bytes | None, *, limit: int = DEAD_LETTER_VALUE_LIMIT, **fields: Any
    ) -> DeadLetter:
        """The dead letter of ``value``, cut to ``limit`` bytes and marked ``truncated`` if longer.

        Args:
            value: the original record's bytes.
            limit: most bytes kept.
            **fields: the other fields (source_topic, reason, error_type, agent, ...).
        """
        raw = value or b""
        return cls(
            value_b64=cls.encode_value(raw[:limit]),
            truncated=len(raw) > limit,
            original_size=len(raw),
            **fields,
        )

    @staticmethod
    def encode_value(value: bytes | None) -> str:
        """The original record's bytes as base64 text."""
        return base64.b64encode(value or b"").decode()

    def value(self) -> bytes:
        """The original record's bytes."""
        return base64.b64decode(self.value_b64)

    def to_json(self) -> bytes:
        """The dead letter as JSON bytes."""
        return self.model_dump_json().encode()
