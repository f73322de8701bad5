"""Test kit for saga authors: run a saga in process, no broker, in virtual time.

Given a saga, when a step fails, expect these compensations::

    async def test_declined_card_releases_inventory():
        kit = SagaTestKit(ORDER_SAGA, transport=httpx.MockTransport(handler),
                          service_urls=service_urls("http://test"))
        kit.fail("charge_payment", BusinessFailure("card declined"))
        run = await kit.run(ORDER_SAGA, order)
        assert run.status == "compensated"
        assert run.compensated == ["release_inventory", "cancel_order"]

The kit drives the real state machine and the real executor; actions run for real
unless replaced with :meth:`SagaTestKit.replace`. HTTP steps can be pointed at an
``httpx.MockTransport``. Backoffs and timeouts pass in virtual time, instantly.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel

from coordinator.definition import Action, Saga
from coordinator.events import LifecycleEvent
from coordinator.executor import StepExecutor, error_info
from coordinator.machine import transition
from coordinator.messages import (
    CancelSaga,
    InboxMessage,
    Phase,
    ResolveStep,
    RetryCompensation,
    StartSaga,
    StepRequest,
    TimerFired,
)
from coordinator.registry import SagaRegistry
from coordinator.state import SagaState


@dataclass(frozen=True)
class Attempt:
    """One executed attempt: which step, which phase, which attempt, and whether it worked."""

    phase: Phase
    step: str
    attempt: int
    ok: bool


@dataclass
class _Failure:
    error: BaseException
    times: int | None
    seen: int = 0


@dataclass
class SagaRun:
    """What happened to one saga run by the kit."""

    saga_id: str
    state: SagaState | None
    events: list[LifecycleEvent] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)

    @property
    def status(self) -> str | None:
        """The saga's status at the end of the run (None: never started)."""
        return self.state.status if self.state else None

    @property
    def completed(self) -> list[str]:
        """Steps whose action succeeded, in order."""
        return [a.step for a in self.attempts if a.phase == "action" and a.ok]

    @property
    def compensated(self) -> list[str]:
        """Compensations that succeeded, in the order they ran."""
        return [a.step for a in self.attempts if a.phase == "compensation" and a.ok]

    @property
    def event_types(self) -> list[str]:
        """The lifecycle event types the run emitted, in order."""
        return [e.type for e in self.events]


class SagaTestKit:
    """Runs sagas in process against the real state machine and executor.

    Args:
        sagas: the definitions under test.
        transport: an ``httpx.MockTransport`` (or any transport) for HTTP steps.
        service_urls: base URLs per service for HTTP steps.
        start: the virtual clock's start.
    """

    def __init__(
        self,
        *sagas: Saga[Any],
        transport: httpx.AsyncBaseTransport | None = None,
        service_urls: dict[str, str] | None = None,
        start: datetime = datetime(2026, 1, 1, tzinfo=UTC),
    ) -> None:
        self.registry = SagaRegistry(sagas)
        self.now = start
        client = httpx.AsyncClient(transport=transport) if transport is not None else None
        self.executor = StepExecutor(
            self.registry, service_urls=service_urls, client=client, clock=lambda: self.now
        )
        self._replaced: dict[tuple[Phase, str], Action] = {}
        self._failures: dict[tuple[Phase, str], _Failure] = {}
        self._runs: dict[str, SagaRun] = {}

    def replace(self, step: str, fn: Action, *, phase: Phase = "action") -> SagaTestKit:
        """Run ``fn`` instead of the step's action (or compensation)."""
        self._replaced[(phase, step)] = fn
        return self

    def fail(
        self,
        step: str,
        error: BaseException | None = None,
        *,
        times: int | None = None,
        phase: Phase = "action",
    ) -> SagaTestKit:
        """Make the first ``times`` attempts (all when None) of a step raise ``error``."""
        self._failures[(phase, step)] = _Failure(error or RuntimeError(f"{step} failed"), times)
        return self

    def heal(self, step: str | None = None) -> SagaTestKit:
        """Stop injected failures (of one step, or all)."""
        for key in [k for k in self._failures if step is None or k[1] == step]:
            del self._failures[key]
        return self

    async def run(
        self,
        saga: Saga[Any] | str,
        input: BaseModel | dict[str, Any],
        *,
        saga_id: str = "saga-1",
        business_key: str | None = None,
        cancel_before: str | None = None,
    ) -> SagaRun:
        """Start a saga and drive it until it rests (terminal, compensation_failed, parked).

        ``cancel_before`` sends an operator cancel just before that step's first attempt.
        """
        name = saga if isinstance(saga, str) else saga.name
        data = input.model_dump(mode="json") if isinstance(input, BaseModel) else input
        start = StartSaga(
            saga_id=saga_id, at=self.now, saga_type=name, input=data, business_key=business_key
        )
        run = self._runs.setdefault(saga_id, SagaRun(saga_id, None))
        await self._drive(run, start, cancel_before=cancel_before)
        return run

    async def retry_compensation(self, saga_id: str = "saga-1") -> SagaRun:
        """The operator command for a ``compensation_failed`` saga."""
        run = self._runs[saga_id]
        await self._drive(run, RetryCompensation(saga_id=saga_id, at=self.now))
        return run

    async def resolve(
        self,
        step: str,
        resolution: str,
        *,
        saga_id: str = "saga-1",
        output: BaseModel | None = None,
    ) -> SagaRun:
        """The operator's verdict on a parked step: applied, not_applied or retry."""
        run = self._runs[saga_id]
        data = output.model_dump(mode="json") if output is not None else None
        message = ResolveStep.model_validate(
            {"saga_id": saga_id, "step": step, "resolution": resolution, "output": data}
        )
        await self._drive(run, message)
        return run

    async def aclose(self) -> None:
        """Close the executor's HTTP client."""
        await self.executor.aclose()

    async def _drive(
        self, run: SagaRun, first: InboxMessage, *, cancel_before: str | None = None
    ) -> None:
        inbox: deque[InboxMessage] = deque([first])
        for _ in range(100_000):
            if not inbox:
                pending = run.state.pending if run.state else None
                if run.state is None or run.state.resting or pending is None:
                    return
                self.now = max(self.now, pending.deadline)
                inbox.append(TimerFired(saga_id=run.saga_id, at=self.now))
            out = transition(self.registry, run.state, inbox.popleft(), now=self.now)
            if out.rejected:
                run.dead_letters.append(out.rejected)
            run.state = out.state
            run.events.extend(out.events)
            for request in out.requests:
                if cancel_before == request.step and request.phase == "action":
                    cancel_before = None
                    inbox.append(CancelSaga(saga_id=run.saga_id, at=self.now))
                    continue
                result = await self._execute(request)
                run.attempts.append(
                    Attempt(request.phase, request.step, request.attempt, result.ok)
                )
                inbox.append(result)
        raise AssertionError(f"saga {run.saga_id!r} did not come to rest in 100000 messages")

    async def _execute(self, request: StepRequest) -> Any:
        key = (request.phase, request.step)
        failure = self._failures.get(key)
        if failure is not None and (failure.times is None or failure.seen < failure.times):
            failure.seen += 1
            saga = self.registry.get(request.saga_type, request.saga_version)
            step = saga.steps[saga.index(request.step)]
            return request.result(at=self.now, error=error_info(failure.error, step))
        replacement = self._replaced.get(key)
        if replacement is None:
            return await self.executor.execute(request)
        saga = self.registry.get(request.saga_type, request.saga_version)
        step = saga.steps[saga.index(request.step)]
        try:
            reply = await replacement(self.executor.context(saga, step, request))
        except Exception as exc:
            return request.result(at=self.now, error=error_info(exc, step))
        output = reply.model_dump(mode="json") if isinstance(reply, BaseModel) else None
        return request.result(at=self.now, output=output if request.phase == "action" else None)
