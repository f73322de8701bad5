"""Test kit for saga authors: run a saga in process, no broker, in virtual time.

Given a saga, when a step fails, expect these compensations::

    async def test_declined_card_releases_inventory():
        async with SagaTestKit(ORDER_SAGA, transport=httpx.MockTransport(handler),
                               service_urls=service_urls("http://test")) as kit:
            kit.fail("charge_payment", BusinessFailure("card declined"))
            run = await kit.run(order)
        assert run.status == "compensated"
        assert run.compensated == ["reserve_inventory", "create_order"]

The kit takes the saga once; ``run`` starts it with an input (its model, or a dict). It
drives the real state machine and the real executor; actions run for real unless replaced
with :meth:`SagaTestKit.replace`. HTTP steps can be pointed at an ``httpx.MockTransport``.
Backoffs and timeouts pass in virtual time, instantly. ``async with`` closes the
executor's HTTP client at the end.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

import httpx
from pydantic import BaseModel

from coordinator._definition import Action, Saga
from coordinator._executor import StepExecutor, error_info
from coordinator._machine import transition
from coordinator._messages import (
    CancelSaga,
    InboxMessage,
    Phase,
    ResolveStep,
    RetryCompensation,
    StartSaga,
    StepRequest,
    TimerFired,
)
from coordinator._registry import SagaRegistry
from coordinator._state import SagaState, SagaStatus, StepStatus
from coordinator.events import LifecycleEvent

__all__ = ["Attempt", "Resolution", "SagaRun", "SagaTestKit"]

InputT = TypeVar("InputT", bound=BaseModel)

#: an operator's verdict on a parked step (``python -m coordinator resolve``)
Resolution = Literal["applied", "not_applied", "retry"]


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
    def status(self) -> SagaStatus | None:
        """The saga's status at the end of the run (None: never started, see dead_letters)."""
        return self.state.status if self.state else None

    @property
    def steps(self) -> dict[str, StepStatus]:
        """Each step's status at the end of the run, in saga order."""
        return {s.name: s.status for s in self.state.steps} if self.state else {}

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


class SagaTestKit(Generic[InputT]):
    """Runs one saga in process against the real state machine and executor.

    Use it as ``async with SagaTestKit(saga) as kit:``; runs need the open kit.

    Args:
        saga: the definition under test.
        transport: an ``httpx.MockTransport`` (or any transport) for HTTP steps.
        service_urls: base URLs per service for HTTP steps.
        start: the virtual clock's start.
    """

    def __init__(
        self,
        saga: Saga[InputT],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        service_urls: dict[str, str] | None = None,
        start: datetime = datetime(2026, 1, 1, tzinfo=UTC),
    ) -> None:
        self.saga = saga
        self.registry = SagaRegistry([saga])
        self.now = start
        self._transport = transport
        self._service_urls = service_urls
        self._executor: StepExecutor | None = None
        self._replaced: dict[tuple[Phase, str], Action] = {}
        self._failures: dict[tuple[Phase, str], _Failure] = {}
        self._runs: dict[str, SagaRun] = {}

    async def __aenter__(self) -> SagaTestKit[InputT]:
        client = httpx.AsyncClient(transport=self._transport) if self._transport else None
        self._executor = StepExecutor(
            self.registry, service_urls=self._service_urls, client=client, clock=lambda: self.now
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._executor is not None:
            await self._executor.aclose()
            self._executor = None

    @property
    def executor(self) -> StepExecutor:
        """The real executor the kit runs steps with (open inside ``async with`` only)."""
        if self._executor is None:
            raise RuntimeError(
                f"SagaTestKit({self.saga.name!r}) is not open: run sagas inside "
                "`async with SagaTestKit(saga) as kit:`"
            )
        return self._executor

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
        input: InputT | dict[str, Any],
        *,
        saga_id: str = "saga-1",
        business_key: str | None = None,
        cancel_before: str | None = None,
    ) -> SagaRun:
        """Start the saga and drive it until it rests (terminal, compensation_failed, parked).

        Args:
            input: the saga's input model, or a dict (an invalid one is rejected, as a
                worker rejects it: ``run.status`` is None and ``run.dead_letters`` says why).
            saga_id: the id to start it under.
            business_key: the business key its lifecycle events carry.
            cancel_before: send an operator cancel just before that step's first attempt.
        """
        data = input.model_dump(mode="json") if isinstance(input, BaseModel) else input
        start = StartSaga(
            saga_id=saga_id,
            at=self.now,
            saga_type=self.saga.name,
            input=data,
            business_key=business_key,
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
        resolution: Resolution,
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

    async def _drive(
        self, run: SagaRun, first: InboxMessage, *, cancel_before: str | None = None
    ) -> None:
        executor = self.executor  # raises before anything runs when the kit is not open
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
                result = await self._execute(executor, request)
                run.attempts.append(
                    Attempt(request.phase, request.step, request.attempt, result.ok)
                )
                inbox.append(result)
        raise AssertionError(f"saga {run.saga_id!r} did not come to rest in 100000 messages")

    async def _execute(self, executor: StepExecutor, request: StepRequest) -> Any:
        key = (request.phase, request.step)
        failure = self._failures.get(key)
        if failure is not None and (failure.times is None or failure.seen < failure.times):
            failure.seen += 1
            saga = self.registry.get(request.saga_type, request.saga_version)
            step = saga.steps[saga.index(request.step)]
            return request.result(at=self.now, error=error_info(failure.error, step))
        replacement = self._replaced.get(key)
        if replacement is None:
            return await executor.execute(request)
        saga = self.registry.get(request.saga_type, request.saga_version)
        step = saga.steps[saga.index(request.step)]
        try:
            reply = await replacement(executor.context(saga, step, request))
        except Exception as exc:
            return request.result(at=self.now, error=error_info(exc, step))
        output = reply.model_dump(mode="json") if isinstance(reply, BaseModel) else None
        return request.result(at=self.now, output=output if request.phase == "action" else None)
