"""The chaos oracle's judgement of one saga's lifecycle (no services)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from coordinator.events import ErrorInfo, parse_event
from tests.chaos.oracle import Verdict, judge_lifecycle
from tests.chaos.workload import FLAKY_SHIPPING, Planned

AT = datetime(2026, 1, 1, tzinfo=UTC)
STEPS = ("create_order", "reserve_inventory", "charge_payment")


def events(ship_errors: list[str]) -> list[Any]:
    """A flaky_shipping saga: three steps succeed, every ship attempt fails, full unwind."""
    kinds: list[tuple[str, str | None, str | None]] = [("saga_started", None, None)]
    for step in STEPS:
        kinds += [("step_started", step, None), ("step_succeeded", step, None)]
    for error in ship_errors:
        kinds += [("step_started", "ship", None), ("step_failed", "ship", error)]
    kinds.append(("saga_compensating", None, None))
    for step in ("ship", *reversed(STEPS)):
        kinds += [("compensation_started", step, None), ("compensation_succeeded", step, None)]
    kinds.append(("saga_compensated", None, None))
    out = []
    for seq, (kind, step, error) in enumerate(kinds, 1):
        body: dict[str, Any] = {
            "type": kind,
            "event_id": f"e{seq}",
            "saga_id": "s",
            "saga_type": "order_fulfillment",
            "saga_version": 1,
            "seq": seq,
            "occurred_at": AT.isoformat(),
            "step": step,
        }
        if error is not None:
            body["error"] = ErrorInfo(type=error, message="x").model_dump()
        out.append(parse_event(json.dumps(body).encode()))
    return out


def judge(ship_errors: list[str]) -> Verdict:
    verdict = Verdict("test")
    planned = Planned("s", "o", FLAKY_SHIPPING)
    assert judge_lifecycle(verdict, planned, events(ship_errors)) == "compensated"
    return verdict


def test_a_flaky_saga_whose_attempts_a_fault_cost_may_end_compensated() -> None:
    verdict = judge(["Expired", "StepTimeout", "TransientHttpError", "TransientHttpError"])
    assert verdict.ok, verdict.explain()


def test_a_flaky_saga_compensated_without_any_fault_is_wrong() -> None:
    verdict = judge(["TransientHttpError"] * 4)
    assert not verdict.ok
    assert len(verdict.wrong_status) == 1
