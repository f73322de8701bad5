"""A saga record's outbox: what a transition sends, stored once in the record.

A step request carries the saga input and the earlier steps' outputs, which the record
already holds. So the record stores each request *without* them (``input`` and
``outputs`` left out) and :func:`render` puts them back when the request is sent or
re-sent: a record in flight holds its input and outputs once, not once per request.
Lifecycle events are stored as sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from coordinator._messages import StepRequest
from coordinator._state import SagaState

Item = Mapping[str, str]

_LEFT_OUT = {"input", "outputs"}


def stored_request(request: StepRequest) -> dict[str, str]:
    """The outbox item of a step request, as kept in the record."""
    payload = request.model_dump_json(exclude=_LEFT_OUT)
    return {"kind": "request", "service": request.service, "payload": payload}


def render(item: Item, state: SagaState) -> str:
    """The payload to send for an outbox item (requests get input and outputs back)."""
    payload = item["payload"]
    if item["kind"] != "request" or not payload.endswith("}"):
        return payload
    outputs = {s.name: s.output for s in state.steps if s.output is not None}
    extra = json.dumps({"input": state.input, "outputs": outputs}, separators=(",", ":"))
    return f"{payload[:-1]},{extra[1:]}"


def request_of(item: Item, state: SagaState) -> StepRequest:
    """The step request an outbox item stands for."""
    return StepRequest.model_validate_json(render(item, state))
