"""The saga state machine: a functional core with no I/O and no clock.

``transition(registry, state, message) -> Transition``: one inbox message gives one new
state and the step requests and lifecycle events to send. Time comes from the message
(``message.at``); jitter is a hash; so the same input always yields the same output, and a
message replayed after a crash re-emits byte-identical events (same ``seq``/``event_id``).

Rules (see ARCHITECTURE.md section 4):

* A duplicate or stale message (a seen attempt, another step, a finished saga) changes
  nothing and emits nothing. A success from an earlier attempt of the pending step is
  accepted: every attempt shares one idempotency key, so it is the same effect.
* A failed attempt is retried after the policy's backoff while attempts remain and the
  error is retryable; otherwise the step fails and the completed steps are compensated
  in reverse, one at a time, from a persisted cursor.
* A compensation that exhausts its retries leaves the saga ``compensation_failed``; an
  operator's ``retry_compensation`` resumes it at the cursor with a fresh retry budget.
* Cancel compensates a running saga; an attempt in flight is awaited first, so its effect
  is compensated if it happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from compensations import Escalate, compensation_plan, next_in_plan, on_compensation_failure
from coordinator import events as ev
from coordinator.definition import Saga
from coordinator.errors import UnknownSagaError
from coordinator.messages import (
    CancelSaga,
    InboxMessage,
    Phase,
    RetryCompensation,
    StartSaga,
    StepRequest,
    StepResult,
    TimerFired,
    idempotency_key,
)
from coordinator.state import Pending, SagaState, StepState


class Definitions(Protocol):
    def get(self, name: str, version: int | None = None) -> Saga[Any]: ...


@dataclass
class Transition:
    """The outcome of one message.

    ``state`` is the saga's record after the message (None if it has none); ``changed``
    says whether it must be written; ``rejected`` carries the reason when the message is
    invalid and belongs in the dead-letter topic.
    """

    state: SagaState | None
    changed: bool = False
    events: list[ev.LifecycleEvent] = field(default_factory=list)
    requests: list[StepRequest] = field(default_factory=list)
    rejected: str | None = None
    replayed: bool = False

    @property
    def outbox(self) -> list[dict[str, str]]:
        """What to send, serialized: step requests first, then lifecycle events."""
        if self.state is None or not (self.changed or self.replayed):
            return []
        return self.state.last_outbox


def transition(
    registry: Definitions,
    state: SagaState | None,
    message: InboxMessage,
    *,
    message_id: str | None = None,
    reply_to: str = "",
    copy: bool = True,
) -> Transition:
    """Apply one inbox message to one saga's state (pure).

    With ``copy=False`` the given state object is updated in place (and returned): for
    callers that decoded it for this message alone, to skip a deep copy per message.
    """
    if state is not None and message_id is not None and state.last_message == message_id:
        return _replay(state)
    if isinstance(message, StartSaga):
        if state is not None:
            return Transition(state)  # starting an existing saga returns it; never runs twice
        return _start(registry, message, message_id, reply_to)
    if state is None:
        if isinstance(message, TimerFired):
            return Transition(None)
        return Transition(None, rejected=f"{message.kind} for unknown saga {message.saga_id!r}")
    try:
        saga = registry.get(state.saga_type, state.saga_version)
    except UnknownSagaError as exc:
        return Transition(state, rejected=str(exc))
    run = _Run(saga, state.model_copy(deep=True) if copy else state, message.at, reply_to)
    if isinstance(message, StepResult):
        run.on_result(message)
    elif isinstance(message, TimerFired):
        run.on_timer()
    elif isinstance(message, CancelSaga):
        run.on_cancel(message.reason)
    elif isinstance(message, RetryCompensation):
        run.on_retry_compensation()
    return run.finish(message_id)


def _replay(state: SagaState) -> Transition:
    out = Transition(state, replayed=True)
    for item in state.last_outbox:
        if item["kind"] == "event":
            out.events.append(ev.parse_event(item["payload"]))
        else:
            out.requests.append(StepRequest.model_validate_json(item["payload"]))
    return out


def _start(
    registry: Definitions, msg: StartSaga, message_id: str | None, reply_to: str
) -> Transition:
    try:
        saga = registry.get(msg.saga_type, msg.saga_version)
    except UnknownSagaError as exc:
        return Transition(None, rejected=str(exc))
    try:
        value = saga.input.model_validate(msg.input)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return Transition(
            None, rejected=f"{saga.label}: input does not match {saga.input.__name__}: {errors}"
        )
    state = SagaState(
        saga_id=msg.saga_id,
        saga_type=saga.name,
        saga_version=saga.version,
        business_key=msg.business_key,
        input=value.model_dump(mode="json"),
        steps=[StepState(name=s.name, service=s.service.name) for s in saga.steps],
        started_at=msg.at,
        updated_at=msg.at,
    )
    run = _Run(saga, state, msg.at, reply_to)
    run.emit(ev.SagaStarted, data=state.input)
    run.dispatch("action", 0, attempt=1)
    return run.finish(message_id)


class _Run:
    """One transition in progress: a private copy of the state plus what to emit."""

    def __init__(self, saga: Saga[Any], state: SagaState, now: datetime, reply_to: str):
        self.saga = saga
        self.s = state
        self.now = now
        self.reply_to = reply_to
        self.events: list[ev.LifecycleEvent] = []
        self.requests: list[StepRequest] = []
        self.dirty = False

    # -- emitting -------------------------------------------------------------------

    def emit(self, kind: type[Any], *, step: int | None = None, **fields: Any) -> None:
        self.dirty = True
        self.s.seq += 1
        where: dict[str, Any] = {}
        if step is not None:
            where = {
                "step": self.saga.steps[step].name,
                "service": self.saga.steps[step].service.name,
            }
        self.events.append(
            kind(
                event_id=f"{self.s.saga_id}:{self.s.seq}",
                saga_id=self.s.saga_id,
                saga_type=self.s.saga_type,
                saga_version=self.s.saga_version,
                seq=self.s.seq,
                occurred_at=self.now,
                business_key=self.s.business_key,
                **where,
                **fields,
            )
        )

    def dispatch(self, phase: Phase, i: int, *, attempt: int, round_start: int = 1) -> None:
        step, st = self.saga.steps[i], self.s.steps[i]
        if phase == "action":
            st.status, st.attempts = "running", attempt
            self.emit(ev.StepStarted, step=i, attempt=attempt)
        else:
            st.status, st.compensation_attempts = "compensating", attempt
            self.emit(ev.CompensationStarted, step=i, attempt=attempt)
        deadline = self.now + step.timeout
        self.s.pending = Pending(
            phase=phase,
            step=i,
            attempt=attempt,
            waiting="result",
            deadline=deadline,
            round_start=round_start,
        )
        self.requests.append(
            StepRequest(
                saga_id=self.s.saga_id,
                saga_type=self.s.saga_type,
                saga_version=self.s.saga_version,
                step=step.name,
                service=step.service.name,
                phase=phase,
                attempt=attempt,
                idempotency_key=idempotency_key(self.s.saga_id, step.name, phase),
                input=self.s.input,
                outputs={x.name: x.output for x in self.s.steps if x.output is not None},
                deadline=deadline,
                reply_to=self.reply_to,
            )
        )

    # -- messages -------------------------------------------------------------------

    def on_result(self, msg: StepResult) -> None:
        p = self.s.pending
        if self.s.resting or p is None or msg.phase != p.phase:
            return
        if msg.step != self.saga.steps[p.step].name:
            return
        if msg.ok:
            if msg.attempt <= p.attempt:
                self._succeeded(p, msg.output)
        elif msg.attempt == p.attempt and p.waiting == "result":
            error = msg.error or ev.ErrorInfo(type="UnknownError", message="no error given")
            self._failed(p, error)

    def on_timer(self) -> None:
        p = self.s.pending
        if self.s.resting or p is None or self.now < p.deadline:
            return
        if p.waiting == "backoff":
            if p.phase == "action" and self.s.cancel_requested:
                self.s.pending = None
                self.s.steps[p.step].status = "failed"
                self._unwind("cancelled")
            else:
                self.dispatch(p.phase, p.step, attempt=p.attempt + 1, round_start=p.round_start)
            return
        timeout = self.saga.steps[p.step].timeout.total_seconds()
        self._failed(
            p,
            ev.ErrorInfo(
                type="StepTimeout",
                retryable=True,
                message=f"no result for attempt {p.attempt} within {timeout:g}s",
            ),
        )

    def on_cancel(self, reason: str) -> None:
        if self.s.resting or self.s.status == "compensating" or self.s.cancel_requested:
            return
        self.s.cancel_requested = reason
        self.dirty = True
        p = self.s.pending
        if p is not None and p.waiting == "backoff":
            # the failed step never completed: nothing of it to compensate
            self.s.pending = None
            self.s.steps[p.step].status = "failed"
            self._unwind("cancelled")
        # an attempt in flight: its result (or timeout) decides, then the unwind starts

    def on_retry_compensation(self) -> None:
        i = next_in_plan(self.s.plan, self.s.cursor)
        if self.s.status != "compensation_failed" or i is None:
            return
        self.s.status = "compensating"
        self.emit(ev.SagaCompensating, data={"reason": "operator_retry"})
        attempt = self.s.steps[i].compensation_attempts + 1
        self.dispatch("compensation", i, attempt=attempt, round_start=attempt)

    # -- rules ----------------------------------------------------------------------

    def _succeeded(self, p: Pending, output: dict[str, Any] | None) -> None:
        st = self.s.steps[p.step]
        self.s.pending = None
        if p.phase == "compensation":
            st.status = "compensated"
            self.emit(ev.CompensationSucceeded, step=p.step, attempt=p.attempt)
            self.s.cursor += 1
            self._continue_unwind()
            return
        st.status, st.output, st.error = "succeeded", output, None
        self.emit(ev.StepSucceeded, step=p.step, attempt=p.attempt, data=output)
        if self.s.cancel_requested:
            self._unwind("cancelled")
        elif p.step + 1 < len(self.saga.steps):
            self.s.current = p.step + 1
            self.dispatch("action", p.step + 1, attempt=1)
        else:
            self.s.status = "completed"
            self.emit(ev.SagaCompleted)

    def _failed(self, p: Pending, error: ev.ErrorInfo) -> None:
        step, st = self.saga.steps[p.step], self.s.steps[p.step]
        st.error = error
        salt = f"{self.s.saga_id}:{step.name}:{p.phase}"
        if p.phase == "action":
            retry = not self.s.cancel_requested and step.retry.can_retry(
                attempt=p.attempt, error_type=error.type, retryable=error.retryable
            )
            self.emit(ev.StepFailed, step=p.step, attempt=p.attempt, error=error, retrying=retry)
            if retry:
                self._backoff(p, step.retry.delay(p.attempt, salt=salt))
                return
            st.status, self.s.error, self.s.pending = "failed", error, None
            self._unwind("cancelled" if self.s.cancel_requested else "step_failed")
            return
        decision = on_compensation_failure(
            step.compensation_retry,
            attempt_in_round=p.attempt - p.round_start + 1,
            error_type=error.type,
            retryable=error.retryable,
            salt=salt,
        )
        retrying = not isinstance(decision, Escalate)
        self.emit(
            ev.CompensationFailed, step=p.step, attempt=p.attempt, error=error, retrying=retrying
        )
        if not isinstance(decision, Escalate):
            self._backoff(p, decision.delay)
            return
        st.status, self.s.error, self.s.pending = "compensation_failed", error, None
        self.s.status = "compensation_failed"
        self.emit(
            ev.SagaCompensationFailed, step=p.step, error=error, data={"reason": decision.reason}
        )

    def _backoff(self, p: Pending, delay: timedelta) -> None:
        if delay <= timedelta(0):
            self.dispatch(p.phase, p.step, attempt=p.attempt + 1, round_start=p.round_start)
            return
        self.s.pending = p.model_copy(update={"waiting": "backoff", "deadline": self.now + delay})
        self.dirty = True

    def _unwind(self, reason: str) -> None:
        completed = [i for i, st in enumerate(self.s.steps) if st.status == "succeeded"]
        plan = compensation_plan(completed, lambda i: self.saga.steps[i].compensation is not None)
        self.s.plan, self.s.cursor, self.s.status = list(plan), 0, "compensating"
        names = [self.saga.steps[i].name for i in plan]
        self.emit(ev.SagaCompensating, data={"reason": reason, "plan": names})
        self._continue_unwind()

    def _continue_unwind(self) -> None:
        i = next_in_plan(self.s.plan, self.s.cursor)
        if i is not None:
            attempt = self.s.steps[i].compensation_attempts + 1
            self.dispatch("compensation", i, attempt=attempt, round_start=attempt)
            return
        self.s.pending = None
        if self.s.cancel_requested:
            self.s.status = "cancelled"
            self.emit(ev.SagaCancelled, data={"reason": self.s.cancel_requested})
        else:
            self.s.status = "compensated"
            self.emit(ev.SagaCompensated, error=self.s.error)

    def finish(self, message_id: str | None) -> Transition:
        if not self.dirty:
            return Transition(self.s)
        self.s.updated_at = self.now
        self.s.last_message = message_id
        # serialized once: these payloads are what the shell sends, and what it re-sends
        # if this message is redelivered after a crash
        self.s.last_outbox = [
            {"kind": "request", "service": r.service, "payload": r.model_dump_json()}
            for r in self.requests
        ] + [{"kind": "event", "payload": e.model_dump_json()} for e in self.events]
        return Transition(self.s, changed=True, events=self.events, requests=self.requests)
