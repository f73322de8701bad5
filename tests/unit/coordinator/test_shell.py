"""The coordinator's Faust shell without a broker: the real ``Coordinator`` with its table,
producer and dead-letter topic replaced by in-memory recorders."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from coordinator.app import Coordinator
from coordinator.messages import StartSaga, StepRequest
from coordinator.registry import SagaRegistry
from coordinator.settings import CoordinatorSettings
from tests.integration.inline_sagas import MIXED
from tests.unit.coordinator.sagas import linear_saga

AT = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class FakeMessage:
    key: bytes | None
    value: bytes
    partition: int = 0
    offset: int = 0
    topic: str = "t.inbox"


@dataclass
class FakeEvent:
    key: bytes | None
    value: bytes
    message: FakeMessage


class Recorder:
    def __init__(self, coordinator: Coordinator) -> None:
        self.sent: list[tuple[str, bytes | None, dict[str, Any]]] = []
        self.dead: list[str] = []
        self.table: dict[str, Any] = {}
        coordinator.table = self.table  # type: ignore[assignment]

        async def send(topic: Any, key: bytes | None, value: bytes) -> None:
            self.sent.append((topic.get_topic_name(), key, json.loads(value)))

        async def dead_letter(message: Any, reason: str, exc: Any, agent: str) -> None:
            self.dead.append(reason)

        coordinator._send = send  # type: ignore[method-assign]
        coordinator.dead_letter = dead_letter  # type: ignore[method-assign]

    def topics(self) -> list[str]:
        return [topic for topic, _, _ in self.sent]


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[tuple[Coordinator, Recorder]]:
    settings = CoordinatorSettings(topic_prefix="t", datadir=tmp_path, web_enabled=False)
    coordinator = Coordinator(settings, SagaRegistry([linear_saga(2), MIXED]))
    yield coordinator, Recorder(coordinator)


def start(saga_type: str, saga_id: str = "s1", **input: Any) -> bytes:
    return StartSaga(saga_id=saga_id, at=AT, saga_type=saga_type, input=input).to_json()


async def test_start_sends_request_and_events_then_writes_the_table(shell) -> None:  # type: ignore[no-untyped-def]
    coordinator, rec = shell
    await coordinator.handle_inbox(b"s1", start("linear2"), FakeMessage(b"s1", b"", offset=7))
    assert rec.topics() == ["t.step.svc", "t.lifecycle", "t.lifecycle"]
    assert [body.get("type") for _, _, body in rec.sent[1:]] == ["saga_started", "step_started"]
    assert rec.table["s1"]["status"] == "running" and rec.table["s1"]["last_message"] == "0:7"
    assert "s1" in coordinator.deadlines and rec.dead == []


async def test_redelivered_message_re_sends_the_same_payloads(shell) -> None:  # type: ignore[no-untyped-def]
    coordinator, rec = shell
    message = FakeMessage(b"s1", b"", offset=7)
    await coordinator.handle_inbox(b"s1", start("linear2"), message)
    first, table = list(rec.sent), json.dumps(rec.table, sort_keys=True)
    await coordinator.handle_inbox(b"s1", start("linear2"), message)  # after a crash
    assert rec.sent[len(first) :] == first
    assert json.dumps(rec.table, sort_keys=True) == table
    await coordinator.handle_inbox(b"s1", start("linear2"), FakeMessage(b"s1", b"", offset=8))
    assert len(rec.sent) == 2 * len(first), "a duplicate start (new offset) emits nothing"


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"s1", b"\xff not json", "invalid inbox message"),
        (b"other", start("linear2"), "must equal saga_id"),
        (b"s1", start("nope"), "saga type 'nope' is not registered"),
        (b"s1", start("mixed", fail_at=3), "input does not match Job"),
    ],
)
async def test_invalid_messages_go_to_dead_letters(shell, key, value, reason) -> None:  # type: ignore[no-untyped-def]
    coordinator, rec = shell
    await coordinator.handle_inbox(key, value, FakeMessage(key, value))
    assert len(rec.dead) == 1 and reason in rec.dead[0]
    assert rec.sent == [] and rec.table == {}


async def test_inline_steps_run_inside_the_inbox_agent(shell) -> None:  # type: ignore[no-untyped-def]
    coordinator, rec = shell
    await coordinator.handle_inbox(b"m1", start("mixed", "m1"), FakeMessage(b"m1", b""))
    # a and b ran inline; c is queued for its executor; nothing went to the inline topic
    assert "t.step.inline-work" not in rec.topics()
    assert rec.topics().count("t.step.queued-work") == 1
    done = [b["step"] for t, _, b in rec.sent if b.get("type") == "step_succeeded"]
    assert done == ["a", "b"]
    stored = rec.table["m1"]
    assert [s["status"] for s in stored["steps"]] == [
        "succeeded",
        "succeeded",
        "running",
        "pending",
    ]
    # the stored outbox is the whole chain, so a redelivery re-sends all of it
    outbox = stored["last_outbox"]
    sendable = [o for o in outbox if o.get("service") != "inline-work"]
    assert [json.loads(o["payload"]) for o in sendable] == [body for _, _, body in rec.sent]


async def test_an_internal_error_is_dead_lettered_and_the_agent_goes_on(shell) -> None:  # type: ignore[no-untyped-def]
    coordinator, rec = shell

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    good = start("linear2", "s2")
    events = [
        FakeEvent(b"s1", start("linear2"), FakeMessage(b"s1", b"")),
        FakeEvent(b"s2", good, FakeMessage(b"s2", good, offset=1)),
    ]
    original = coordinator.registry.get
    calls = {"n": 0}

    def flaky_get(name: str, version: int | None = None) -> Any:
        calls["n"] += 1
        return broken() if calls["n"] == 1 else original(name, version)

    coordinator.registry.get = flaky_get  # type: ignore[method-assign]
    coordinator._live["stale"] = object()  # type: ignore[assignment]

    class Stream:
        async def events(self) -> AsyncIterator[FakeEvent]:
            for event in events:
                yield event

    await coordinator._inbox_agent(Stream())  # type: ignore[arg-type]
    assert len(rec.dead) == 1 and "internal error: RuntimeError('bug')" in rec.dead[0]
    assert "stale" not in coordinator._live
    assert rec.table["s2"]["status"] == "running"


async def test_kafka_unavailable_is_retried_in_place_not_dead_lettered(shell) -> None:  # type: ignore[no-untyped-def]
    """Sends fail while a result for a running (cached) saga is applied: the message is
    retried in place, never dead-lettered, and the table ends as if nothing had failed
    (the failed attempt's in-place update of the cached state is not taken for a replay,
    which would skip the table write)."""
    from aiokafka.errors import KafkaConnectionError

    coordinator, rec = shell
    await coordinator._handle_holding_partition(
        FakeEvent(b"s1", start("linear2"), FakeMessage(b"s1", b"", offset=1))
    )
    request = StepRequest.model_validate(rec.sent[0][2])
    result = request.result(at=AT, output={"ref": "x"}).to_json()
    real_send, failures = coordinator._send, {"left": 2}

    async def flaky_send(topic: Any, key: bytes | None, value: bytes) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise KafkaConnectionError("broker down")
        await real_send(topic, key, value)

    coordinator._send = flaky_send  # type: ignore[method-assign]
    await coordinator._handle_holding_partition(
        FakeEvent(b"s1", result, FakeMessage(b"s1", result, offset=2))
    )
    assert rec.dead == [] and failures["left"] == 0
    stored = rec.table["s1"]
    assert [s["status"] for s in stored["steps"]] == ["succeeded", "running"]
    assert stored["last_message"] == "0:2"
