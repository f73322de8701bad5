"""Read models of the application state: what ``GET /sagas/{id}`` and the CLI show."""

from __future__ import annotations

from typing import Any

from coordinator.state import SagaState


def saga_view(state: SagaState) -> dict[str, Any]:
    """The saga as JSON: status, the step and service it is with now, per-step detail."""
    current = state.current_step()
    return {
        "saga_id": state.saga_id,
        "saga_type": state.saga_type,
        "saga_version": state.saga_version,
        "business_key": state.business_key,
        "status": state.status,
        "current_step": current.name if current else None,
        "current_service": current.service if current else None,
        "waiting": state.pending.waiting if state.pending else None,
        "cancel_requested": state.cancel_requested,
        "error": state.error.model_dump() if state.error else None,
        "seq": state.seq,
        "started_at": state.started_at.isoformat(),
        "updated_at": state.updated_at.isoformat(),
        "steps": [
            {
                "name": s.name,
                "service": s.service,
                "status": s.status,
                "attempts": s.attempts,
                "compensation_attempts": s.compensation_attempts,
                "error": s.error.model_dump() if s.error else None,
            }
            for s in state.steps
        ],
    }


def format_view(view: dict[str, Any]) -> str:
    """Human-readable rendering for the CLI."""
    lines = [
        f"saga {view['saga_id']} ({view['saga_type']} v{view['saga_version']})"
        + (f"  business key {view['business_key']}" if view.get("business_key") else ""),
        f"  status: {view['status']}"
        + (
            f"  — with {view['current_service']} ({view['current_step']}, {view['waiting']})"
            if view.get("current_step")
            else ""
        ),
    ]
    if view.get("error"):
        lines.append(f"  error: {view['error']['type']}: {view['error']['message']}")
    for step in view["steps"]:
        comp = (
            f", compensation attempts {step['compensation_attempts']}"
            if step["compensation_attempts"]
            else ""
        )
        lines.append(
            f"  - {step['name']:<20} {step['service']:<14} {step['status']:<20} "
            f"attempts {step['attempts']}{comp}"
        )
    return "\n".join(lines)
