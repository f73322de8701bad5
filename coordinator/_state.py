"""The saga record kept in the changelog-backed table (application state)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from coordinator._messages import Phase
from coordinator.events import ErrorInfo

SagaStatus = Literal[
    "running",
    "compensating",
    "completed",
    "compensated",
    "cancelled",
    "compensation_failed",
    "parked",
]
StepStatus = Literal[
    "pending",
    "running",
    "succeeded",
    "failed",
    "maybe_applied",
    "compensating",
    "compensated",
    "compensation_failed",
]

#: Statuses in which a saga does nothing until an operator acts (or ever).
TERMINAL: frozenset[str] = frozenset({"completed", "compensated", "cancelled"})
RESTING: frozenset[str] = TERMINAL | {"compensation_failed", "parked"}


def wake_time(
    status: str, pending_deadline: datetime | None, expires_at: datetime | None
) -> datetime | None:
    """``SagaState.wake_at()`` from the three fields it reads.

    The deadline index parses only these when it is rebuilt (``deadlines.wake_of``).
    """
    if pending_deadline is not None and status not in RESTING:
        return pending_deadline
    if status in TERMINAL:
        return expires_at  # retention: shrink, then delete
    return None


class StepState(BaseModel):
    """One step of a saga record: status, attempts, output, last error."""

    model_config = ConfigDict(extra="forbid")

    name: str
    service: str
    status: StepStatus = "pending"
    attempts: int = 0
    compensation_attempts: int = 0
    output: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    #: some attempt's outcome was uncertain: the effect may have happened
    uncertain: bool = False
    #: attempts of the action this worker never sent (``NotSent``): not uncertain, but
    #: they never close the key (another worker may have sent the same attempt), so a
    #: step that stops on them is still undone by its key
    not_sent: int = 0
    #: a success arrived after the step stopped waiting for it (recorded once)
    late_success: bool = False


class Pending(BaseModel):
    """What the saga waits for: a result (until ``deadline``) or a backoff to end."""

    model_config = ConfigDict(extra="forbid")

    phase: Phase
    step: int
    attempt: int
    waiting: Literal["result", "backoff"]
    deadline: datetime
    #: first attempt number of the current retry round (an operator's retry or resolve
    #: starts a new one with a fresh budget)
    round_start: int = 1


class SagaState(BaseModel):
    """One saga's record in the changelog-backed table (application state).

    Unknown fields are ignored, so a worker can read the records of a newer version that
    added one (a rolling upgrade, or a rollback).
    """

    model_config = ConfigDict(extra="ignore")

    saga_id: str
    saga_type: str
    saga_version: int
    business_key: str | None = None
    status: SagaStatus = "running"
    input: dict[str, Any]
    steps: list[StepState]
    current: int = 0
    #: (mutable defaults as factories: a ``[]`` default is deep-copied per record, slower)
    plan: list[int] = Field(default_factory=list)
    cursor: int = 0
    pending: Pending | None = None
    cancel_requested: str | None = None
    error: ErrorInfo | None = None
    seq: int = 0
    started_at: datetime
    updated_at: datetime
    #: the inbox message last applied and what it emitted, re-sent if it is redelivered
    #: after a crash (its effects may have reached the table but not every topic)
    last_message: str | None = None
    last_outbox: list[dict[str, str]] = Field(default_factory=list)
    #: when the saga reached a terminal status; and when its record expires (shrinks to a
    #: compact marker, then is deleted) — see ``coordinator._retention``
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    #: True for the compact marker of a finished saga (steps, input and outbox dropped)
    compact: bool = False
    #: the number of the inbox batch that wrote this record (per partition, increasing
    #: across owners): a new owner re-sends the outbox of the sagas of the last one
    #: (``coordinator._local``). Kept the last field: ``batch_of`` reads it from the bytes
    batch: int | None = None

    @property
    def resting(self) -> bool:
        """Doing nothing until an operator acts, or ever."""
        return self.status in RESTING

    def wake_at(self) -> datetime | None:
        """When this saga needs waking (None: never, until something arrives).

        A pending deadline (the owning worker's deadline index sends a ``timer`` record)
        or a finished saga's expiry (its expiry queue; ``coordinator._expiry``).
        """
        deadline = self.pending.deadline if self.pending is not None else None
        return wake_time(self.status, deadline, self.expires_at)

    def marker(self, *, now: datetime, expires_at: datetime) -> SagaState:
        """The compact record of a finished saga: enough to refuse a second start."""
        return SagaState(
            saga_id=self.saga_id,
            saga_type=self.saga_type,
            saga_version=self.saga_version,
            business_key=self.business_key,
            status=self.status,
            input={},
            steps=[],
            seq=self.seq,
            started_at=self.started_at,
            updated_at=now,
            finished_at=self.finished_at,
            expires_at=expires_at,
            compact=True,
        )

    def current_step(self) -> StepState | None:
        """The step the saga is with right now (action or compensation)."""
        if self.pending is not None:
            return self.steps[self.pending.step]
        if self.status == "parked":
            return self.steps[self.current]  # the step awaiting an operator's resolve
        unwinding = self.status in ("compensating", "compensation_failed")
        if unwinding and self.cursor < len(self.plan):
            return self.steps[self.plan[self.cursor]]
        return None
