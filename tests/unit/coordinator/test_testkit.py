"""The test kit drives the real machine and executor: given/when/expect without a broker."""

from __future__ import annotations

import json
from dataclasses import replace

import httpx
import pytest

from coordinator import BusinessFailure, Saga, StepFailure
from coordinator.testing import SagaTestKit
from tests.unit.coordinator.sagas import HTTP_SAGA, Item, linear_saga


async def test_all_steps_succeed() -> None:
    async with SagaTestKit(linear_saga(3)) as kit:
        run = await kit.run(Item())
    assert run.status == "completed"
    assert run.steps == {"s0": "succeeded", "s1": "succeeded", "s2": "succeeded"}
    assert run.completed == ["s0", "s1", "s2"]
    assert run.compensated == []
    assert run.event_types[0] == "saga_started" and run.event_types[-1] == "saga_completed"
    assert [e.seq for e in run.events] == list(range(1, len(run.events) + 1))


async def test_business_failure_compensates_completed_steps_in_reverse_without_retry() -> None:
    async with SagaTestKit(linear_saga(4)) as kit:
        run = await kit.fail("s2", BusinessFailure("declined")).run(Item())
    assert run.status == "compensated"
    assert [a.attempt for a in run.attempts if a.step == "s2" and a.phase == "action"] == [1]
    assert run.compensated == ["s1", "s0"]


async def test_transient_failure_is_retried_then_succeeds() -> None:
    async with SagaTestKit(linear_saga(2)) as kit:
        run = await kit.fail("s1", ConnectionError("flaky"), times=2).run(Item())
    assert run.status == "completed"
    failed = [e for e in run.events if e.type == "step_failed"]
    assert [(e.attempt, e.retrying) for e in failed] == [(1, True), (2, True)]


async def test_compensation_failure_then_operator_retry() -> None:
    async with SagaTestKit(linear_saga(3)) as kit:
        kit.fail("s2", BusinessFailure("declined"))  # final and definite: s2 did nothing
        kit.fail("s0", ConnectionError("down"), phase="compensation")
        run = await kit.run(Item())
        assert run.status == "compensation_failed"
        assert run.compensated == ["s1"]
        kit.heal("s0")
        run = await kit.retry_compensation()
    assert run.status == "compensated"
    assert run.compensated == ["s1", "s0"]


async def test_cancel_compensates_completed_steps() -> None:
    async with SagaTestKit(linear_saga(4)) as kit:
        run = await kit.run(Item(), cancel_before="s2")
    assert run.status == "cancelled"
    assert run.completed == ["s0", "s1"]
    # s2's request was sent and never answered: it may have applied, so it is undone too
    assert run.compensated == ["s2", "s1", "s0"]


async def test_an_unexpected_exception_is_uncertain_and_compensated() -> None:
    async with SagaTestKit(linear_saga(3)) as kit:
        run = await kit.fail("s1", RuntimeError("crashed half-way")).run(Item())
    assert run.status == "compensated"
    assert run.compensated == ["s1", "s0"]


async def test_a_final_definite_failure_is_not_compensated() -> None:
    async with SagaTestKit(linear_saga(3)) as kit:
        run = await kit.fail("s1", BusinessFailure("declined")).run(Item())
    assert run.status == "compensated"
    assert run.compensated == ["s0"]


async def test_retries_ending_on_a_retryable_failure_leave_the_key_open_so_it_is_undone() -> None:
    async with SagaTestKit(linear_saga(3)) as kit:
        run = await kit.fail("s1", StepFailure("503 before acting")).run(Item())
    assert run.status == "compensated"
    assert run.compensated == ["s1", "s0"]  # the undo tombstones the key


async def test_http_steps_against_a_mock_transport() -> None:
    seen: list[tuple[str, str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, request.headers.get("Idempotency-Key")))
        if request.url.path == "/charges":
            assert json.loads(request.content) == {"n": 7}
            return httpx.Response(201, json={"charge_id": "ch 1"})
        return httpx.Response(200, json={})

    async with SagaTestKit(HTTP_SAGA, transport=httpx.MockTransport(handler)) as kit:
        kit.fail("after", BusinessFailure("no"))
        run = await kit.run(Item(n=7), saga_id="s-9")
    assert run.status == "compensated"
    assert seen == [
        ("POST", "/charges", "s-9:charge:do"),
        ("POST", "/charges/undo", "s-9:charge:undo"),
    ]


async def test_http_4xx_is_business_failure_and_5xx_is_retried() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(402, json={"error": "card_declined"})

    async with SagaTestKit(HTTP_SAGA, transport=httpx.MockTransport(handler)) as kit:
        run = await kit.run(Item())
    assert run.status == "compensated" and calls["n"] == 1
    assert run.state is not None and run.state.error is not None
    assert run.state.error.retryable is False and "402" in run.state.error.message

    statuses = iter([503, 503, 201, 200])

    def flaky(request: httpx.Request) -> httpx.Response:
        status = next(statuses)
        return httpx.Response(status, json={"charge_id": "c"} if status == 201 else {})

    async with SagaTestKit(HTTP_SAGA, transport=httpx.MockTransport(flaky)) as kit2:
        run2 = await kit2.run(Item())
    assert run2.status == "completed"


async def test_an_invalid_input_is_rejected_not_raised() -> None:
    async with SagaTestKit(linear_saga(1)) as kit:
        run = await kit.run({"n": "seven"})
    assert run.state is None and run.status is None and run.steps == {}
    assert run.dead_letters and "linear1" in run.dead_letters[0]


async def test_a_kit_that_is_not_open_says_how_to_open_it() -> None:
    kit = SagaTestKit(linear_saga(1))
    with pytest.raises(RuntimeError, match=r"async with SagaTestKit\(saga\) as kit"):
        await kit.run(Item())


async def test_the_kit_parks_and_resolves_an_uncertain_step() -> None:
    base = linear_saga(2)
    parked = Saga(
        "parking",
        input=Item,
        steps=[base.steps[0], replace(base.steps[1], on_uncertain="park")],
    )
    async with SagaTestKit(parked) as kit:
        run = await kit.fail("s1", TimeoutError("no reply")).run(Item())
        assert run.status == "parked" and run.event_types[-1] == "saga_parked"
        assert run.steps == {"s0": "succeeded", "s1": "maybe_applied"}
        kit.heal()
        run = await kit.resolve("s1", "not_applied")
    assert run.status == "compensated" and run.compensated == ["s1", "s0"]
