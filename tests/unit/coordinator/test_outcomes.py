"""Outcome classes on the pure machine: uncertain steps, parking, late results, outputs,
and the one clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from coordinator import Saga, SagaRegistry, Service, Step, StepContext
from coordinator._executor import StepExecutor
from coordinator._machine import Transition, transition
from coordinator._messages import (
    CancelSaga,
    InboxMessage,
    ResolveStep,
    StartSaga,
    StepRequest,
    TimerFired,
    parse_inbox,
)
from coordinator._state import SagaState
from coordinator.events import ErrorInfo
from tests.unit.coordinator.sagas import FAST, Item, Out, ok, undo

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def saga(on_uncertain: str = "compensate") -> Saga[Item]:
    return Saga(
        "three",
        input=Item,
        steps=[
            Step(
                f"s{i}",
                service=Service("svc"),
                action=ok,
                compensation=undo,
                retry=FAST,
                compensation_retry=FAST,
                timeout=timedelta(seconds=1),
                on_uncertain=on_uncertain if i == 1 else "compensate",  # type: ignore[arg-type]
            )
            for i in range(3)
        ],
    )


class Driver:
    def __init__(self, definition: Saga[Item]) -> None:
        self.registry = SagaRegistry([definition])
        self.now = T0
        self.state: SagaState | None = None
        self.events: list[str] = []
        self.sent: list[StepRequest] = []

    def send(self, msg: InboxMessage) -> Transition:
        out = transition(self.registry, self.state, msg, now=self.now)
        self.state = out.state
        self.events += [e.type for e in out.events]
        self.sent += out.requests
        return out

    def last(self) -> StepRequest:
        return self.sent[-1]

    def succeed(self, output: dict[str, Any] | None = None) -> Transition:
        req = self.last()
        out = {"ref": req.step} if output is None and req.phase == "action" else output
        return self.send(req.result(output=out))

    def time_out_until_rest(self) -> None:
        assert self.state is not None
        while self.state.pending is not None and self.state.pending.phase == "action":
            self.now = self.state.pending.deadline
            self.send(TimerFired(saga_id="x"))

    def compensate_all(self) -> None:
        assert self.state is not None
        while self.state.pending is not None:
            self.succeed()

    def start(self) -> Driver:
        self.send(StartSaga(saga_id="x", saga_type="three", input={}))
        self.succeed()  # s0 applied
        return self


def compensated(d: Driver) -> list[str]:
    return [r.step for r in d.sent if r.phase == "compensation"]


def test_a_timed_out_step_is_compensated_first_with_its_undo_key() -> None:
    d = Driver(saga()).start()
    d.time_out_until_rest()
    d.compensate_all()
    assert d.state is not None and d.state.status == "compensated"
    assert compensated(d) == ["s1", "s0"]
    undo_s1 = next(r for r in d.sent if r.phase == "compensation" and r.step == "s1")
    assert undo_s1.idempotency_key == "x:s1:undo" and undo_s1.compensates == "x:s1:do"


def test_park_then_resolve_applied_continues_the_saga() -> None:
    d = Driver(saga("park")).start()
    d.time_out_until_rest()
    assert d.state is not None and d.state.status == "parked" and d.events[-1] == "saga_parked"
    assert d.state.steps[1].status == "maybe_applied" and d.state.resting
    d.send(ResolveStep(saga_id="x", step="s1", resolution="applied", output={"ref": "r"}))
    assert d.state.status == "running" and d.last().step == "s2"
    d.succeed()
    assert d.state.status == "completed" and "step_resolved" in d.events


def test_park_then_resolve_not_applied_tombstones_the_step_and_compensates() -> None:
    d = Driver(saga("park")).start()
    d.time_out_until_rest()
    d.send(ResolveStep(saga_id="x", step="s1", resolution="not_applied"))
    d.compensate_all()
    assert d.state is not None and d.state.status == "compensated"
    # the undo by key closes s1's key against a straggling duplicate of its request
    assert compensated(d) == ["s1", "s0"]


def test_park_then_retry_runs_a_fresh_round() -> None:
    d = Driver(saga("park")).start()
    d.time_out_until_rest()
    tried = d.state.steps[1].attempts if d.state else 0
    d.send(ResolveStep(saga_id="x", step="s1", resolution="retry"))
    assert d.last().step == "s1" and d.last().attempt == tried + 1
    d.succeed()
    d.succeed()
    assert d.state is not None and d.state.status == "completed"


def test_resolve_of_a_saga_that_is_not_parked_is_rejected_with_the_reason() -> None:
    d = Driver(saga("park")).start()
    out = d.send(ResolveStep(saga_id="x", step="s1", resolution="applied"))
    assert out.rejected and "running" in out.rejected and not out.changed


def test_cancel_of_a_parked_saga_compensates_the_uncertain_step() -> None:
    d = Driver(saga("park")).start()
    d.time_out_until_rest()
    d.send(CancelSaga(saga_id="x"))
    d.compensate_all()
    assert d.state is not None and d.state.status == "cancelled"
    assert compensated(d) == ["s1", "s0"]


def test_a_late_success_resolves_a_parked_step() -> None:
    d = Driver(saga("park")).start()
    first_s1 = next(r for r in d.sent if r.step == "s1")
    d.time_out_until_rest()
    d.send(first_s1.result(output={"ref": "late"}))
    assert d.events[-3:] == ["step_late_success", "step_succeeded", "step_started"]
    assert d.state is not None and d.state.status == "running"


def test_cancel_during_backoff_after_a_timeout_compensates_that_step() -> None:
    d = Driver(saga()).start()
    assert d.state is not None and d.state.pending is not None
    d.now = d.state.pending.deadline
    d.send(TimerFired(saga_id="x"))  # attempt 1 timed out: backoff
    assert d.state.pending is not None and d.state.pending.waiting == "backoff"
    d.send(CancelSaga(saga_id="x"))
    d.compensate_all()
    assert d.state.status == "cancelled" and compensated(d) == ["s1", "s0"]


def test_a_definite_failure_after_the_deadline_counts_as_uncertain() -> None:
    d = Driver(saga()).start()
    req = d.last()
    d.now = req.deadline + timedelta(milliseconds=50)  # the timer is late
    expired = ErrorInfo(type="Expired", message="not run", uncertain=False)
    d.send(req.result(error=expired))
    assert d.state is not None and d.state.steps[1].uncertain


def test_a_malformed_output_fails_only_that_step_and_is_never_stored() -> None:
    d = Driver(saga()).start()
    d.succeed({"wrong": 1})  # s1 replies ok with an output that is not Out
    assert d.state is not None and d.state.status == "compensating"
    failed = d.state.steps[1]
    assert failed.output is None and failed.error and failed.error.type == "OutputValidationError"
    assert "ref" in failed.error.message
    d.compensate_all()
    assert d.state.status == "compensated" and compensated(d) == ["s1", "s0"]
    assert all("wrong" not in r.outputs for r in d.sent)


def test_naive_timestamps_are_rejected_at_the_boundary() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        parse_inbox(b'{"kind":"timer","saga_id":"x","at":"2026-01-01T10:00:00"}')
    assert parse_inbox(b'{"kind":"timer","saga_id":"x"}').at is None  # informational
    with pytest.raises(ValueError, match="timezone-aware"):
        transition(
            SagaRegistry([saga()]), None, TimerFired(saga_id="x"), now=T0.replace(tzinfo=None)
        )


def test_sender_clock_skew_does_not_move_deadlines() -> None:
    d = Driver(saga()).start()
    skewed = (
        d.last().result(output={"ref": "s1"}).model_copy(update={"at": T0 - timedelta(hours=1)})
    )
    d.send(skewed)
    assert d.state is not None and d.state.pending is not None
    assert d.state.pending.deadline == T0 + timedelta(seconds=1)  # the worker's now + timeout


async def test_executor_does_not_run_an_expired_request() -> None:
    ran: list[str] = []

    async def act(ctx: StepContext[Item]) -> Out:
        ran.append(ctx.step)
        return Out(ref="x")

    definition = Saga("one", input=Item, steps=[Step("a", service=Service("svc"), action=act)])
    clock = [T0]
    executor = StepExecutor(SagaRegistry([definition]), clock=lambda: clock[0])
    out = transition(
        SagaRegistry([definition]), None, StartSaga(saga_id="x", saga_type="one", input={}), now=T0
    )
    request = out.requests[0]
    clock[0] = request.deadline + timedelta(seconds=1)
    result = await executor.execute(request)
    assert not result.ok and result.error and result.error.type == "Expired"
    assert result.error.uncertain is False and ran == []
    clock[0] = T0
    assert (await executor.execute(request)).ok and ran == ["a"]


async def test_an_attempt_gets_only_the_time_left_before_its_deadline() -> None:
    import asyncio

    async def slow(ctx: StepContext[Item]) -> Out:
        await asyncio.sleep(30)
        return Out(ref="never")

    definition = Saga(
        "slow",
        input=Item,
        steps=[Step("a", service=Service("svc"), action=slow, timeout=timedelta(seconds=60))],
    )
    registry = SagaRegistry([definition])
    now = datetime.now(UTC)
    start = StartSaga(saga_id="x", saga_type="slow", input={})
    request = transition(registry, None, start, now=now).requests[0]
    request = request.model_copy(update={"deadline": now + timedelta(milliseconds=200)})
    result = await asyncio.wait_for(StepExecutor(registry).execute(request), timeout=10)
    assert result.error is not None and result.error.type == "StepTimeout"
    assert result.error.uncertain and result.error.retryable


# -- rules the effects property test cannot reach with contract-abiding participants --


def business_failure_of_s1() -> Driver:
    d = Driver(saga()).start()
    declined = ErrorInfo(type="Declined", message="no", retryable=False)
    d.send(d.last().result(error=declined))  # final and definite: s1 is not in the plan
    assert d.state is not None and d.state.plan == [0]
    return d


def test_a_late_success_the_unwind_does_not_cover_is_inserted_after_the_one_in_flight() -> None:
    d = business_failure_of_s1()
    s1 = next(r for r in d.sent if r.step == "s1")
    d.send(s1.result(output={"ref": "it ran after all"}))  # the participant broke its word
    assert d.events[-1] == "step_late_success" and d.state is not None
    assert d.state.plan == [0, 1]  # s0's undo is in flight and cannot be called back
    d.compensate_all()
    assert d.state.status == "compensated" and compensated(d) == ["s0", "s1"]


def test_a_late_success_after_the_unwind_ended_reopens_it() -> None:
    d = business_failure_of_s1()
    d.compensate_all()
    assert d.state is not None and d.state.status == "compensated"
    s1 = next(r for r in d.sent if r.step == "s1")
    d.send(s1.result(output={"ref": "late"}))
    assert d.state.status == "compensating" and d.last().step == "s1"
    d.compensate_all()
    assert d.events.count("saga_compensated") == 2 and compensated(d) == ["s0", "s1"]


def test_a_success_of_an_earlier_attempt_completes_the_step() -> None:
    d = Driver(saga()).start()
    first = d.last()
    assert d.state is not None and d.state.pending is not None
    d.now = d.state.pending.deadline
    d.send(TimerFired(saga_id="x"))  # attempt 1 timed out: backoff, then attempt 2
    d.now = d.state.pending.deadline
    d.send(TimerFired(saga_id="x"))
    assert d.last().attempt == 2
    d.send(first.result(output={"ref": "attempt 1 made it"}))
    assert d.state.steps[1].status == "succeeded" and d.last().step == "s2"


def test_a_cancel_pending_during_an_attempt_unwinds_instead_of_parking() -> None:
    d = Driver(saga("park")).start()
    d.send(CancelSaga(saga_id="x"))  # s1's attempt is in flight
    d.time_out_until_rest()
    d.compensate_all()
    assert d.state is not None and d.state.status == "cancelled"
    assert compensated(d) == ["s1", "s0"]


def test_resolve_as_applied_validates_the_output_and_names_the_field() -> None:
    d = Driver(saga("park")).start()
    d.time_out_until_rest()
    out = d.send(ResolveStep(saga_id="x", step="s1", resolution="applied", output={"x": 1}))
    assert out.rejected and "ref" in out.rejected and not out.changed
    out = d.send(ResolveStep(saga_id="x", step="s1", resolution="applied"))  # no output
    assert out.rejected and "output" in out.rejected


def test_ok_without_the_declared_output_is_an_output_validation_error() -> None:
    d = Driver(saga()).start()
    d.send(d.last().result())  # ok: true, output: null, but s1 declares output=Out
    assert d.state is not None and d.state.steps[1].error is not None
    assert d.state.steps[1].error.type == "OutputValidationError"
    assert d.state.steps[1].output is None and d.state.status == "compensating"


def test_a_compensation_success_after_compensation_failed_resumes_the_unwind() -> None:
    d = business_failure_of_s1()
    undo = d.last()
    down = ErrorInfo(type="Down", message="503")
    while d.state is not None and d.state.status == "compensating":
        assert d.state.pending is not None
        if d.state.pending.waiting == "backoff":
            d.now = d.state.pending.deadline
            d.send(TimerFired(saga_id="x"))
        else:
            d.send(d.last().result(error=down))
    assert d.state is not None and d.state.status == "compensation_failed"
    d.send(undo.result())  # the first undo went through after all
    assert d.state.status == "compensated" and d.events[-1] == "saga_compensated"


async def test_a_request_that_cannot_be_built_is_a_definite_failure_and_sends_nothing() -> None:
    import httpx

    from coordinator import http

    sent: list[httpx.Request] = []

    def body(ctx: StepContext[Item]) -> dict[str, Any]:
        raise ValueError("no such field")

    definition = Saga(
        "build",
        input=Item,
        steps=[
            Step(
                "a", service=Service("svc", url="http://svc"), action=http("POST", "/x", body=body)
            )
        ],
    )
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200))
    )
    registry = SagaRegistry([definition])
    now = datetime.now(UTC)
    request = transition(
        registry, None, StartSaga(saga_id="x", saga_type="build", input={}), now=now
    ).requests[0]
    result = await StepExecutor(registry, client=client).execute(request)
    assert result.error is not None and not result.error.retryable and not result.error.uncertain
    assert sent == []


def test_a_redelivered_success_of_an_applied_step_after_the_unwind_is_not_news() -> None:
    d = business_failure_of_s1()
    s0 = next(r for r in d.sent if r.step == "s0" and r.phase == "action")
    d.compensate_all()
    seq = d.state.seq if d.state else 0
    out = d.send(s0.result(output={"ref": "s0"}))  # a step request re-run after a crash
    assert not out.changed and not out.events and d.state is not None and d.state.seq == seq
