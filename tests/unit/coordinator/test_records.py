"""Small records: an in-flight record holds the input and each output once."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from coordinator import SagaRegistry
from coordinator._machine import transition
from coordinator._messages import StartSaga, StepRequest
from coordinator._outbox import render, request_of
from tests.unit.coordinator.sagas import linear_saga

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_record_in_flight_holds_input_and_outputs_once_and_requests_get_them_back() -> None:
    registry = SagaRegistry([linear_saga(3)])
    start = StartSaga(saga_id="x", saga_type="linear3", input={"n": 424242})
    out = transition(registry, None, start, now=T0)
    for ref in ("OUT-ZERO", "OUT-ONE"):
        out = transition(registry, out.state, out.requests[0].result(output={"ref": ref}), now=T0)
    state = out.state
    assert state is not None and state.pending is not None and state.pending.step == 2
    record = state.model_dump_json()
    # each output once in the steps; the newest also in its own step_succeeded event,
    # stored to be re-sent; the pending request adds no copy of input or outputs
    assert record.count("OUT-ZERO") == 1 and record.count("OUT-ONE") == 2
    assert record.count("424242") == 1
    (item,) = [i for i in state.last_outbox if i["kind"] == "request"]
    sent = json.loads(render(item, state))
    assert sent == json.loads(out.requests[0].model_dump_json())  # what is sent is whole
    assert sent["outputs"] == {"s0": {"ref": "OUT-ZERO"}, "s1": {"ref": "OUT-ONE"}}
    assert request_of(item, state) == StepRequest.model_validate(sent)
