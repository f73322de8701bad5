"""The contracts with other languages as JSON Schema, generated from the pydantic models.

A participant in any language consumes ``{prefix}.step.{service}`` (a ``StepRequest``)
and replies on the request's ``reply_to`` topic (a ``StepResult``, keyed by saga id). A
listener in any language reads ``{prefix}.lifecycle``: each record is one lifecycle event
or a batch of one saga's events (:mod:`coordinator.events`). The schemas in
``coordinator/schemas/`` are generated from :class:`~coordinator._messages.StepRequest`,
:class:`~coordinator._messages.StepResult`, ``coordinator.events.LifecycleEvent`` and
:class:`~coordinator.events.EventBatch`; regenerate them with
``python -m coordinator._contract`` (``make schemas``) after changing a model. A unit
test fails while they are out of date.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from coordinator._messages import StepRequest, StepResult
from coordinator.events import EventBatch, LifecycleEvent

__all__ = ["SCHEMA_DIR", "schemas", "write_schemas"]

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema of each message a remote participant reads or writes.

    The request is described as the coordinator serializes it; the result as the
    coordinator validates it (what a participant may send).
    """
    request = StepRequest.model_json_schema(mode="serialization")
    result = StepResult.model_json_schema(mode="validation")
    event = TypeAdapter(LifecycleEvent).json_schema(mode="serialization")
    record = TypeAdapter(LifecycleEvent | EventBatch).json_schema(mode="serialization")
    return {
        "lifecycle-event.schema.json": {
            **event,
            "$schema": _DIALECT,
            "$id": "saga-coordinator/lifecycle-event.schema.json",
            "description": "One lifecycle event (coordinator.events), as it travels alone "
            "on {prefix}.lifecycle or inside a batch record.",
        },
        "lifecycle-record.schema.json": {
            **record,
            "$schema": _DIALECT,
            "$id": "saga-coordinator/lifecycle-record.schema.json",
            "description": "One record of {prefix}.lifecycle, keyed by saga_id: a single "
            "event, or a batch {schema_version, saga_id, events} of one saga's events in "
            "strictly increasing seq (told apart by the 'events' array). Apply each event "
            "only if its seq is newer than the one stored for its saga.",
        },
        "step-request.schema.json": {
            **request,
            "$schema": _DIALECT,
            "$id": "saga-coordinator/step-request.schema.json",
            "description": "One attempt of a step action or compensation, sent by the "
            "coordinator on {prefix}.step.{service}, keyed by saga_id.",
        },
        "step-result.schema.json": {
            **result,
            "$schema": _DIALECT,
            "$id": "saga-coordinator/step-result.schema.json",
            "description": "A participant's reply to one StepRequest: produce it to the "
            "request's reply_to topic, keyed by saga_id (Kafka's murmur2 partitioner).",
        },
    }


def render(schema: dict[str, Any]) -> str:
    """The file content for one schema (stable: sorted keys, trailing newline)."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = directory / name
        path.write_text(render(schema))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_schemas(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(f"wrote {path}")
