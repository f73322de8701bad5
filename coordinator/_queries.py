"""Read models of the application state: what ``GET /sagas/{id}/`` and the CLI show.

:class:`SagaView` is the JSON a worker serves for one saga and what
:meth:`coordinator.SagaClient.get` returns, typed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from coordinator._state import RESTING, TERMINAL, SagaState, SagaStatus, StepStatus
from coordinator.events import ErrorInfo

__all__ = ["SagaView", "StepView", "format_view", "saga_view"]


class StepView(BaseModel):
    """One step of a saga: its status and how many attempts it took."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    service: str
    status: StepStatus
    attempts: int
    compensation_attempts: int
    error: ErrorInfo | None = None


class SagaView(BaseModel):
    """A saga as its owning worker sees it: status, where it is now, per-step detail."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    saga_id: str
    saga_type: str
    saga_version: int
    business_key: str | None = None
    status: SagaStatus
    #: the step (and its service) the saga is with right now, if any
    current_step: str | None = None
    current_service: str | None = None
    #: what the saga waits for: a step's result, or the end of a retry backoff
    waiting: Literal["result", "backoff"] | None = None
    #: the reason of an operator's cancel that is being carried out
    cancel_requested: str | None = None
    error: ErrorInfo | None = None
    seq: int
    started_at: datetime
    updated_at: datetime
    #: when it reached a terminal status; when its record shrinks or is deleted (retention)
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    #: True once only the outcome is kept (the steps were dropped after the retention)
    compact: bool = False
    steps: list[StepView]

    @property
    def terminal(self) -> bool:
        """Finished for good: completed, compensated or cancelled."""
        return self.status in TERMINAL

    @property
    def resting(self) -> bool:
        """Doing nothing until an operator acts, or ever (terminal statuses included)."""
        return self.status in RESTING

    @classmethod
    def of(cls, state: SagaState) -> SagaView:
        """The view of one saga record."""
        current = state.current_step()
        if current is None and state.status == "parked":  # the step awaiting a resolution
            current = state.steps[state.current]
        return cls(
            saga_id=state.saga_id,
            saga_type=state.saga_type,
            saga_version=state.saga_version,
            business_key=state.business_key,
            status=state.status,
            current_step=current.name if current else None,
            current_service=current.service if current else None,
            waiting=state.pending.waiting if state.pending else None,
            cancel_requested=state.cancel_requested,
            error=state.error,
            seq=state.seq,
            started_at=state.started_at,
            updated_at=state.updated_at,
            finished_at=state.finished_at,
            expires_at=state.expires_at,
            compact=state.compact,
            steps=[
                StepView(
                    name=s.name,
                    service=s.service,
                    status=s.status,
                    attempts=s.attempts,
                    compensation_attempts=s.compensation_attempts,
                    error=s.error,
                )
                for s in state.steps
            ],
        )


def saga_view(state: SagaState) -> dict[str, Any]:
    """The saga as JSON (a :class:`SagaView`), as ``GET /sagas/{id}/`` serves it."""
    return SagaView.of(state).model_dump(mode="json")


def format_view(view: SagaView) -> str:
    """Human-readable rendering for the CLI."""
    key = f"  business key {view.business_key}" if view.business_key else ""
    where = (
        f"  — with {view.current_service} ({view.current_step}, {view.waiting or 'next'})"
        if view.current_step
        else ""
    )
    lines = [
        f"saga {view.saga_id} ({view.saga_type} v{view.saga_version}){key}",
        f"  status: {view.status}{where}",
    ]
    if view.cancel_requested and not view.terminal:
        lines.append(f"  cancel requested: {view.cancel_requested}")
    if view.error:
        lines.append(f"  error: {view.error.type}: {view.error.message}")
    if view.compact:
        lines.append(
            "  (finished long ago: only its outcome is kept, to refuse a second start"
            + (f"; deleted at {view.expires_at:%Y-%m-%d %H:%M:%S}Z)" if view.expires_at else ")")
        )
    for step in view.steps:
        comp = (
            f", compensation attempts {step.compensation_attempts}"
            if step.compensation_attempts
            else ""
        )
        lines.append(
            f"  - {step.name:<20} {step.service:<14} {step.status:<20} "
            f"attempts {step.attempts}{comp}"
        )
    return "\n".join(lines)
