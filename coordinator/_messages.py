"""Wire messages of the coordinator (JSON, keyed by saga id).

Inbox (``{prefix}.inbox``), consumed by the coordinator agent::

    start               StartSaga          a client starts a saga (idempotent on saga_id)
    result              StepResult         an executor reports one attempt's outcome
    timer               TimerFired         a worker's timer saw a deadline pass
    cancel              CancelSaga         an operator cancels: completed steps are compensated
    retry_compensation  RetryCompensation  an operator resumes a compensation_failed saga
    resolve             ResolveStep        an operator resolves a parked step

Time: a transition takes its time from the owning worker's clock, never from the sender.
``at`` is informational and optional; when present it must carry a UTC offset (a naive
timestamp is rejected to the dead-letter topic).

Step requests (``{prefix}.step.{service}``) go to executors, in-process or remote in any
language: they run the action (at least once; ``idempotency_key`` is stable per saga,
step and phase) and reply with a ``StepResult`` on the topic named by ``reply_to``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar, cast

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from coordinator.events import ErrorInfo

Phase = Literal["action", "compensation"]

#: the longest saga id a message may carry (the table's longer keys are never sagas)
MAX_SAGA_ID = 200

M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: dict[str, Any]) -> M:
    """``model(**data)``, validated the same, at about half the cost.

    ``BaseModel.__init__`` validates into an instance made beforehand (``self_instance``),
    a slower path in pydantic-core than building the instance while validating. For the
    models the state machine builds on every step.
    """
    return cast(M, model.__pydantic_validator__.validate_python(data))


#: ``ErrorInfo.type`` of an attempt that never left this worker: an in-process attempt
#: (run by ``coordinator._onehop``, launched once) whose deadline passed while it waited
#: for a free slot, before anything was sent. Not uncertain even past the deadline;
#: trusted only for services that are not ``remote``. It never closes the key: a worker
#: that lost its partitions unaware may have sent the same attempt, so a step that stops
#: on it is still undone by its key (harmless if the do never arrived).
NOT_SENT = "NotSent"


class _Msg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    saga_id: str = Field(min_length=1, max_length=MAX_SAGA_ID)
    #: when the sender wrote it, by the sender's clock: informational only
    at: AwareDatetime | None = None

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class StartSaga(_Msg):
    """A client starts a saga (idempotent on ``saga_id``)."""

    kind: Literal["start"] = "start"
    saga_type: str
    saga_version: int | None = None
    input: dict[str, Any]
    business_key: str | None = None


class StepResult(_Msg):
    """An executor's (or remote participant's) answer to one StepRequest."""

    kind: Literal["result"] = "result"
    step: str
    phase: Phase
    attempt: int = Field(ge=1)
    ok: bool
    output: dict[str, Any] | None = None
    error: ErrorInfo | None = None


class TimerFired(_Msg):
    """A worker's timer saw the saga's deadline pass."""

    kind: Literal["timer"] = "timer"


class CancelSaga(_Msg):
    """An operator cancels a saga: what happened is compensated."""

    kind: Literal["cancel"] = "cancel"
    reason: str = "cancelled by operator"


class RetryCompensation(_Msg):
    """An operator resumes a ``compensation_failed`` saga at its cursor."""

    kind: Literal["retry_compensation"] = "retry_compensation"


class ResolveStep(_Msg):
    """An operator's verdict on a parked step whose outcome was uncertain.

    ``applied``: the effect happened (``output`` optional, validated against the step's
    output model); the saga goes on. ``not_applied``: nothing happened; the earlier steps
    are compensated. ``retry``: run the step again with a fresh retry budget.
    """

    kind: Literal["resolve"] = "resolve"
    step: str
    resolution: Literal["applied", "not_applied", "retry"]
    output: dict[str, Any] | None = None


InboxMessage = Annotated[
    StartSaga | StepResult | TimerFired | CancelSaga | RetryCompensation | ResolveStep,
    Field(discriminator="kind"),
]
_INBOX: TypeAdapter[InboxMessage] = TypeAdapter(InboxMessage)


def parse_inbox(raw: bytes | str) -> InboxMessage:
    """Decode one inbox message; raises ``pydantic.ValidationError`` on bad input."""
    return _INBOX.validate_json(raw)


class StepRequest(BaseModel):
    """One attempt of one step action or compensation, sent to the step's service."""

    model_config = ConfigDict(frozen=True)

    saga_id: str
    saga_type: str
    saga_version: int
    step: str
    service: str
    phase: Phase
    attempt: int
    idempotency_key: str
    #: on a compensation: the idempotency key of the action it undoes (HTTP header
    #: ``Saga-Compensates``); a participant that never applied it leaves a tombstone
    compensates: str | None = None
    input: dict[str, Any]
    outputs: dict[str, dict[str, Any] | None]
    #: do not start the action after this instant; reply with an ``Expired`` failure
    #: (``NotSent`` from the coordinator's own in-process step tasks)
    deadline: AwareDatetime
    reply_to: str = ""

    def to_json(self) -> bytes:
        """The request as JSON bytes, as sent on the step topic."""
        return self.model_dump_json().encode()

    def result(
        self,
        *,
        at: datetime | None = None,
        output: dict[str, Any] | None = None,
        error: ErrorInfo | None = None,
    ) -> StepResult:
        """The StepResult answering this attempt (ok when ``error`` is None)."""
        return validated(
            StepResult,
            {
                "saga_id": self.saga_id,
                "at": at,
                "step": self.step,
                "phase": self.phase,
                "attempt": self.attempt,
                "ok": error is None,
                "output": output,
                "error": error,
            },
        )


def idempotency_key(saga_id: str, step: str, phase: Phase) -> str:
    """Stable across attempts, so a participant applies each effect at most once."""
    return f"{saga_id}:{step}:{'do' if phase == 'action' else 'undo'}"
