"""The JSON Schemas of the remote-participant contract match the pydantic models, and what
the coordinator sends and accepts validates against them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import pytest

from coordinator._contract import SCHEMA_DIR, render, schemas
from coordinator._messages import StepRequest, StepResult


def schema(name: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((SCHEMA_DIR / name).read_text())
    return loaded


@pytest.mark.parametrize("name", sorted(schemas()))
def test_schema_files_are_generated_from_the_models(name: str) -> None:
    assert (SCHEMA_DIR / name).read_text() == render(schemas()[name]), (
        f"coordinator/schemas/{name} is out of date: run `make schemas` and commit it"
    )


def request() -> StepRequest:
    return StepRequest(
        saga_id="checkout:42",
        saga_type="checkout",
        saga_version=1,
        step="charge",
        service="payment-node",
        phase="compensation",
        attempt=2,
        idempotency_key="checkout:42:charge:undo",
        compensates="checkout:42:charge:do",
        input={"order_id": "42", "amount_cents": 1999},
        outputs={"charge": {"charge_id": "ch-1"}},
        deadline=datetime(2026, 11, 21, 20, 0, tzinfo=UTC),
        reply_to="saga.inbox",
    )


def test_a_step_request_validates() -> None:
    payload = json.loads(request().to_json())
    jsonschema.validate(payload, schema("step-request.schema.json"))


def test_replies_a_participant_may_send_validate() -> None:
    ok = request().result(at=datetime.now(UTC), output={"refund_id": "r-1"})
    jsonschema.validate(json.loads(ok.to_json()), schema("step-result.schema.json"))
    # the minimal reply of a participant in another language: no "at", no output
    minimal = {
        "saga_id": "checkout:42",
        "kind": "result",
        "step": "charge",
        "phase": "action",
        "attempt": 1,
        "ok": False,
        "error": {"type": "CardDeclined", "message": "declined", "retryable": False},
    }
    jsonschema.validate(minimal, schema("step-result.schema.json"))
    assert StepResult.model_validate(minimal).error is not None


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"ok": None}, "ok is required"),
        ({"phase": "undo"}, "phase is action or compensation"),
        ({"attempt": 0}, "attempts count from 1"),
        ({"extra": 1}, "unknown fields are refused"),
    ],
)
def test_the_schema_refuses_what_the_coordinator_refuses(
    change: dict[str, object], why: str
) -> None:
    reply = {"saga_id": "s", "kind": "result", "step": "a", "phase": "action", "attempt": 1}
    reply.update({"ok": True, **change})
    reply = {k: v for k, v in reply.items() if v is not None}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(reply, schema("step-result.schema.json"))
    with pytest.raises(ValueError):
        StepResult.model_validate(reply)
