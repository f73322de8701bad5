"""The shortcuts of the inbox's hot path write and do exactly what the long way did."""

from __future__ import annotations

import asyncio
import json
import math
import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, get_args

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as kafka_murmur2
from pydantic import BaseModel, ValidationError

from coordinator import Saga, SagaRegistry, Step, StepContext, StepFailure, http
from coordinator import events as ev
from coordinator._delivery import AiokafkaBatches
from coordinator._executor import Outputs, StepExecutor, within
from coordinator._machine import transition
from coordinator._messages import StartSaga, StepRequest
from coordinator._watch import murmur2
from tests.unit.coordinator.sagas import PAYMENTS, SVC, Item, Out, linear_saga, undo
from tests.unit.event_check import checked_event_json

T0 = datetime(2026, 1, 1, 12, 30, 15, 123456, tzinfo=UTC)

BASE: dict[str, Any] = {
    "event_id": "s-1:3",
    "saga_id": "s-1",
    "saga_type": "order",
    "saga_version": 2,
    "seq": 3,
    "occurred_at": T0,
}
ERROR = ev.ErrorInfo(type="Declined", message='card "x" declined', retryable=False)
EXTRAS: list[dict[str, Any]] = [
    {},
    {"business_key": "o-1", "step": "pay", "service": "payments", "attempt": 2},
    {"data": {"amount": 1.5, "items": [1, "é", None], "nested": {"ok": True}}},
    {"error": ERROR, "step": "pay", "attempt": 1},
]
#: a participant's or a saga input's floats may be NaN or infinite (JSON has neither)
NON_FINITE: dict[str, Any] = {
    "data": {"price": math.nan, "limits": [math.inf, -math.inf, 1.5], "quote": {"fx": math.nan}}
}


@pytest.mark.parametrize("extra", EXTRAS)
@pytest.mark.parametrize("kind", get_args(get_args(ev.LifecycleEvent)[0]))
def test_event_json_is_the_models_json(kind: type[Any], extra: dict[str, Any]) -> None:
    fields = BASE | extra
    if "retrying" in kind.model_fields:
        fields["retrying"] = True
    assert ev.event_json(kind, **fields) == kind(**fields).model_dump_json()
    assert ev.parse_event(ev.event_json(kind, **fields)) == kind(**fields)


def _refuse_constant(name: str) -> None:
    raise AssertionError(f"{name} is not JSON (RFC 8259)")


@pytest.mark.parametrize("kind", get_args(get_args(ev.LifecycleEvent)[0]))
def test_event_json_writes_non_finite_floats_as_null_like_the_model(kind: type[Any]) -> None:
    fields = BASE | NON_FINITE
    if "retrying" in kind.model_fields:
        fields["retrying"] = True
    written = ev.event_json(kind, **fields)
    assert written == kind(**fields).model_dump_json()
    data = json.loads(written, parse_constant=_refuse_constant)["data"]
    assert data == {"price": None, "limits": [None, None, 1.5], "quote": {"fx": None}}


def test_event_json_refuses_a_field_the_event_lacks() -> None:
    with pytest.raises(TypeError, match="retrying"):
        ev.event_json(ev.StepStarted, retrying=True, **BASE)


def test_unstored_requests_are_returned_but_not_stored() -> None:
    registry = SagaRegistry([linear_saga(2)])
    start = StartSaga(saga_id="s-1", saga_type="linear2", input={"n": 1})
    stored = transition(registry, None, start, now=T0)
    unstored = transition(registry, None, start, now=T0, unstored={"svc"})
    assert [r.step for r in unstored.requests] == [r.step for r in stored.requests] == ["s0"]
    assert [i["kind"] for i in stored.outbox] == ["request", "event", "event"]
    assert [i["kind"] for i in unstored.outbox] == ["event", "event"]
    assert unstored.outbox == stored.outbox[1:]
    assert [e.type for e in unstored.events] == ["saga_started", "step_started"]


async def test_within_returns_what_a_synchronous_action_returns() -> None:
    async def action() -> int:
        return 7

    assert await within(action(), 0.001) == 7


async def test_within_times_out_an_action_that_suspends_too_long() -> None:
    finished = asyncio.Event()

    async def action() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            finished.set()

    with pytest.raises(TimeoutError):
        await within(action(), 0.01)
    assert finished.is_set()  # the action was cancelled, its cleanup ran


async def test_within_resumes_an_action_that_suspends() -> None:
    async def action() -> str:
        await asyncio.sleep(0)
        value = await asyncio.get_running_loop().run_in_executor(None, lambda: "done")
        return value + "!"

    assert await within(action(), 5) == "done!"


async def test_within_passes_errors_and_cancellation_through() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise StepFailure("no", retryable=False)

    with pytest.raises(StepFailure):
        await within(fails(), 5)
    started = asyncio.Event()

    async def waits() -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(within(waits(), 5))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_outputs_are_validated_when_read() -> None:
    class Other(BaseModel):
        x: int

    outputs = Outputs(
        {"a": {"ref": "r"}, "b": None, "c": {"x": 1}, "d": {"x": "not a number"}},
        {"a": Out, "b": Out, "c": None, "d": Other},
    )
    assert list(outputs) == ["a", "b", "c", "d"] and len(outputs) == 4
    assert outputs["a"] == Out(ref="r") and outputs["a"] is outputs["a"]
    assert outputs["b"] is None and outputs["c"] is None  # no data, or no model
    with pytest.raises(StepFailure, match="stored output of step 'd'") as failed:
        outputs["d"]
    assert not failed.value.retryable and failed.value.uncertain  # read by a running action
    with pytest.raises(KeyError):
        outputs["e"]
    before_acting = Outputs({"d": {"x": "not a number"}}, {"d": Other}, uncertain=False)
    with pytest.raises(StepFailure, match="stored output of step 'd'") as failed:
        before_acting["d"]
    assert not failed.value.retryable and not failed.value.uncertain


class Quote(BaseModel):
    price: float


async def _quote(ctx: StepContext[Item]) -> Quote:
    return Quote(price=1.0)


def _attempt(saga: str, step: str, outputs: dict[str, Any]) -> StepRequest:
    return StepRequest(
        saga_id="s-1",
        saga_type=saga,
        saga_version=1,
        step=step,
        service="svc",
        phase="action",
        attempt=1,
        idempotency_key="k",
        input={"n": 1},
        outputs=outputs,
        deadline=T0 + timedelta(seconds=5),
        reply_to="inbox",
    )


async def test_a_bad_stored_output_read_after_the_action_acted_is_uncertain() -> None:
    effects: list[str] = []

    async def charge(ctx: StepContext[Item]) -> Out:
        effects.append("charged")  # the participant is called first...
        return Out(ref=f"c-{ctx.output('quote', Quote).price}")  # ...then the output read

    saga = Saga(
        "lazy",
        input=Item,
        steps=[
            Step("quote", service=SVC, action=_quote, compensation=undo),
            Step("charge", service=SVC, action=charge, compensation=undo),
        ],
    )
    executor = StepExecutor(SagaRegistry([saga]), clock=lambda: T0)
    # a NaN price validated on arrival, then stored as null: it no longer validates
    result = await executor.execute(_attempt("lazy", "charge", {"quote": {"price": None}}))
    assert effects == ["charged"]
    assert result.error is not None and "stored output of step 'quote'" in result.error.message
    assert result.error.uncertain and not result.error.retryable


async def test_a_bad_stored_output_an_http_step_reads_before_sending_is_definite() -> None:
    sent: list[httpx.Request] = []

    def reply(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"charge_id": "c"})

    saga = Saga(
        "lazyhttp",
        input=Item,
        steps=[
            Step("quote", service=SVC, action=_quote, compensation=undo),
            Step(
                "charge",
                service=PAYMENTS,
                action=http("POST", "/c", body=lambda ctx: ctx.output("quote", Quote)),
                compensation=http("POST", "/c/undo"),
            ),
        ],
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(reply)) as client:
        executor = StepExecutor(SagaRegistry([saga]), client=client, clock=lambda: T0)
        result = await executor.execute(_attempt("lazyhttp", "charge", {"quote": {"price": None}}))
    assert sent == []
    assert result.error is not None and "stored output of step 'quote'" in result.error.message
    assert not result.error.uncertain and not result.error.retryable


def test_murmur2_is_kafkas() -> None:
    rng = random.Random(7)
    keys = [rng.randbytes(n) for n in range(64) for _ in range(20)]
    keys += [s.encode() for s in ("", "a", "ab", "abc", "saga-é-1", "order:6f1c2a8e-1b2c")]
    assert [murmur2(k) for k in keys] == [kafka_murmur2(k) for k in keys]


async def test_keyed_records_go_where_the_default_partitioner_sends_them() -> None:
    class Cluster:
        def available_partitions_for_topic(self, topic: str) -> set[int]:
            return {0, 2}  # only for records without a key

    class Producer:
        client = SimpleNamespace(cluster=Cluster())

        async def partitions_for(self, topic: str) -> set[int]:
            return set(range(6))

    batches = AiokafkaBatches(lambda: Producer())  # type: ignore[arg-type, return-value]
    default = DefaultPartitioner()
    for key in [f"saga-{n}".encode() for n in range(200)]:
        want = default(key, list(range(6)), [0, 2])
        assert await batches.partition_of("t.lifecycle", key) == want
    assert await batches.partition_of("t.lifecycle", None) in {0, 2}


@pytest.mark.parametrize(
    "fields",
    [
        {"error": {"type": "Declined", "message": "m"}},  # the model adds the defaults
        {"attempt": True},  # the model writes 1
        {"seq": 0},  # the model refuses it
    ],
)
def test_the_unit_suite_refuses_an_event_the_model_would_not_write(
    fields: dict[str, Any],
) -> None:
    assert ev.event_json is checked_event_json  # every unit test's events are checked
    with pytest.raises((AssertionError, ValidationError)):
        ev.event_json(ev.StepFailed, retrying=True, **(BASE | fields))
