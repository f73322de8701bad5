"""The saga state machine: a functional core with no I/O and no clock reads.

``transition(registry, state, message, now=...) -> Transition``: one inbox message gives one
new state and the step requests and lifecycle events to send. Time comes in as ``now``:
the owning worker's clock when it applies the record, never the ``at`` a sender wrote.
That is safe because the shell stores the new state (acknowledged by the changelog)
before anything derived from it is sent, and a redelivered record re-sends the stored
outbox instead of recomputing it. (The broker's log-append time of the record was the
first choice; under consumer lag it made fresh deadlines already past.) Jitter is a hash.
So the same input always yields the same output.

Rules (see ARCHITECTURE.md section 4):

* A duplicate or stale message (a seen attempt, another step, a finished saga) changes
  nothing and emits nothing. A success from an earlier attempt of the pending step is
  accepted: every attempt shares one idempotency key, so it is the same effect.
* Outcomes are of three kinds. *Success*. *Definite failure*: the participant says nothing
  happened (4xx, business failure, expired before it ran), or the attempt provably never
  left this worker (``NOT_SENT``: an in-process attempt whose deadline passed while it
  waited for a slot). *Uncertain*: the effect may have happened (timeout, 5xx, lost
  reply) — the machine's own deadline counts as one.
* A failed attempt is retried after the policy's backoff while attempts remain and the
  error is retryable. When the retries end, the step is *failed* if its last answer was a
  final definite failure (non-retryable: the participant's stored "no" for the key, which
  earlier attempts with the same key would also get); it is *maybe applied* if the last
  attempt was uncertain or the last failure was retryable (the key stays open: a late
  duplicate of an earlier request may still apply it) — unless every attempt was
  ``NOT_SENT``, so no request exists to straggle: then it failed. A maybe-applied step is
  compensated first in the unwind (its undo tombstones the key under the participant
  contract) or, if the step chose ``on_uncertain="park"``, the saga parks for an operator.
* A success whose output does not match the step's output model is a non-retryable
  ``OutputValidationError``; the step counts as maybe applied (the participant said it
  acted) and the malformed output is never stored.
* Unwinding (``compensations.Unwind``) runs the compensations of the applied and maybe
  applied steps in reverse, one at a time, from a persisted cursor. A compensation that
  exhausts its retries leaves the saga ``compensation_failed``; an operator's
  ``retry_compensation`` resumes it at the cursor with a fresh retry budget.
* **Late results are never dropped.** A success for an attempt no longer awaited is
  recorded (``step_late_success``). A parked step's late success resolves it as applied.
  A step the unwind does not cover yet is inserted into its remaining plan; if the unwind
  already ended, it re-opens for that step.
* Cancel compensates a running saga; an attempt in flight is awaited first (its result or
  its deadline decides whether it counts as applied, maybe applied, or failed).
* Retention (``coordinator.retention``): at ``expires_at`` a finished saga shrinks to a
  compact marker, and the marker is deleted at its own (the owning worker applies both
  itself, ``coordinator.expiry``; a ``timer`` record does the same here). A marker
  answers a second start with nothing and ignores everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from compensations import Escalate, Unwind, on_compensation_failure
from coordinator import events as ev
from coordinator.definition import Saga
from coordinator.errors import UnknownSagaError
from coordinator.messages import (
    NOT_SENT,
    CancelSaga,
    InboxMessage,
    Phase,
    ResolveStep,
    RetryCompensation,
    StartSaga,
    StepRequest,
    StepResult,
    TimerFired,
    idempotency_key,
)
from coordinator.outbox import request_of, stored_request
from coordinator.retention import FOREVER, Retention, expire, is_due
from coordinator.state import TERMINAL, Pending, SagaState, StepState


class Definitions(Protocol):
    """Where the machine finds definitions (a SagaRegistry, or a test's stand-in)."""

    def get(self, name: str, version: int | None = None) -> Saga[Any]:
        """The definition of ``name`` at ``version`` (the latest when None)."""


class _Rejected(Exception):
    """A message that is well-formed but cannot apply (goes to the dead-letter topic)."""


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
    #: retention ended: delete the record (a tombstone on the changelog)
    deleted: bool = False

    @property
    def outbox(self) -> list[dict[str, str]]:
        """What to send, as stored: step requests first, then lifecycle events.

        Requests are stored without the input and outputs the record already holds:
        send each item's ``coordinator.outbox.render(item, state)``.
        """
        if self.state is None or not (self.changed or self.replayed):
            return []
        return self.state.last_outbox


def transition(
    registry: Definitions,
    state: SagaState | None,
    message: InboxMessage,
    *,
    now: datetime,
    message_id: str | None = None,
    reply_to: str = "",
    copy: bool = True,
    retention: Retention = FOREVER,
) -> Transition:
    """Apply one inbox message to one saga's state (pure).

    Args:
        registry: the definitions; the saga runs on the version it started with.
        state: the saga's record, None if it has none yet.
        message: the inbox message to apply.
        now: the transition's time (tz-aware): the owning worker's clock when it applies
            the record (its new state is stored before anything derived is sent).
        message_id: the record's identity (``partition:offset``): a redelivered record
            whose effects are already stored re-sends the stored outbox.
        copy: with False the given state object is updated in place (and returned), for
            callers that decoded it for this message alone.
        retention: how long finished sagas are kept (default: forever).
        reply_to: the topic step requests name for their results (the inbox).
    """
    if now.tzinfo is None:
        raise ValueError("transition(now=...) needs a timezone-aware datetime")
    if state is not None and message_id is not None and state.last_message == message_id:
        return _replay(state)
    if isinstance(message, StartSaga):
        if state is not None:
            return Transition(state)  # starting an existing saga returns it; never runs twice
        return _start(registry, message, now, message_id, reply_to, retention)
    if state is None:
        if isinstance(message, TimerFired):
            return Transition(None)
        return Transition(None, rejected=f"{message.kind} for unknown saga {message.saga_id!r}")
    if isinstance(message, TimerFired) and state.status in TERMINAL:
        return _expire(state, now, message_id, retention)
    if state.compact:
        if isinstance(message, StepResult) and message.ok and message.phase == "action":
            # never dropped silently: its effect may stand and nothing else records it
            return Transition(
                state,
                rejected=f"late success of step {message.step!r} for saga {state.saga_id!r}, "
                f"which finished {state.status} and is past its retention window; check "
                "the participant for an effect left standing (undo it by its key)",
            )
        return Transition(state)  # a marker: nothing else is left to do for this saga
    try:
        saga = registry.get(state.saga_type, state.saga_version)
    except UnknownSagaError as exc:
        return Transition(state, rejected=str(exc))
    run = _Run(saga, state.model_copy(deep=True) if copy else state, now, reply_to, retention)
    try:
        if isinstance(message, StepResult):
            run.on_result(message)
        elif isinstance(message, TimerFired):
            run.on_timer()
        elif isinstance(message, CancelSaga):
            run.on_cancel(message.reason)
        elif isinstance(message, RetryCompensation):
            run.on_retry_compensation()
        elif isinstance(message, ResolveStep):
            run.on_resolve(message)
    except _Rejected as exc:
        return Transition(state, rejected=str(exc))
    return run.finish(message_id)


def _expire(
    state: SagaState, now: datetime, message_id: str | None, retention: Retention
) -> Transition:
    """Retention of a finished saga by a ``timer`` record: full record → marker → deleted.

    The owning worker expires its sagas itself (``coordinator.expiry``); a timer record
    for a finished saga (from an older version) still does the same step.
    """
    if not is_due(state, now):
        return Transition(state)
    after = expire(state, now=now, retention=retention)
    if after is None:
        return Transition(None, changed=True, deleted=True)
    after.last_message = message_id
    return Transition(after, changed=True)


def _replay(state: SagaState) -> Transition:
    out = Transition(state, replayed=True)
    for item in state.last_outbox:
        if item["kind"] == "event":
            out.events.append(ev.parse_event(item["payload"]))
        else:
            out.requests.append(request_of(item, state))
    return out


def _field_errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '.'}: {e['msg']}" for e in exc.errors())


def _start(
    registry: Definitions,
    msg: StartSaga,
    now: datetime,
    message_id: str | None,
    reply_to: str,
    retention: Retention,
) -> Transition:
    try:
        saga = registry.get(msg.saga_type, msg.saga_version)
    except UnknownSagaError as exc:
        return Transition(None, rejected=str(exc))
    try:
        value = saga.input.model_validate(msg.input)
    except ValidationError as exc:
        return Transition(
            None,
            rejected=f"{saga.label}: input does not match {saga.input.__name__}: "
            f"{_field_errors(exc)}",
        )
    state = SagaState(
        saga_id=msg.saga_id,
        saga_type=saga.name,
        saga_version=saga.version,
        business_key=msg.business_key,
        input=value.model_dump(mode="json"),
        steps=[StepState(name=s.name, service=s.service.name) for s in saga.steps],
        started_at=now,
        updated_at=now,
    )
    run = _Run(saga, state, now, reply_to, retention)
    run.emit(ev.SagaStarted, data=state.input)
    run.dispatch("action", 0, attempt=1)
    return run.finish(message_id)


class _Run:
    """One transition in progress: a private copy of the state plus what to emit."""

    def __init__(
        self,
        saga: Saga[Any],
        state: SagaState,
        now: datetime,
        reply_to: str,
        retention: Retention = FOREVER,
    ):
        self.saga = saga
        self.s = state
        self.now = now
        self.reply_to = reply_to
        self.retention = retention
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
                compensates=(
                    idempotency_key(self.s.saga_id, step.name, "action")
                    if phase == "compensation"
                    else None
                ),
                input=self.s.input,
                outputs={x.name: x.output for x in self.s.steps if x.output is not None},
                deadline=deadline,
                reply_to=self.reply_to,
            )
        )

    # -- messages -------------------------------------------------------------------

    def on_result(self, msg: StepResult) -> None:
        try:
            i = self.saga.index(msg.step)
        except KeyError:
            return  # a step this version does not have: nothing it could mean
        p = self.s.pending
        awaited = p is not None and p.phase == msg.phase and p.step == i
        if msg.ok and msg.phase == "action":
            if awaited and p is not None and msg.attempt <= p.attempt:
                self._action_succeeded(p, msg.attempt, msg.output)
            else:
                self._late_success(i, msg)
        elif msg.ok:
            if awaited and p is not None and msg.attempt <= p.attempt:
                self._compensation_succeeded(p)
            elif self._late_undo(i, msg.attempt):
                self.s.status = "compensating"  # the undo happened after all: go on
                self._compensation_succeeded(
                    Pending(phase="compensation", step=i, attempt=msg.attempt,
                            waiting="result", deadline=self.now)
                )  # fmt: skip
        elif awaited and p is not None and msg.attempt == p.attempt and p.waiting == "result":
            error = msg.error or ev.ErrorInfo(
                type="UnknownError", message="the participant gave no error", uncertain=True
            )
            late = self.now >= p.deadline and not error.uncertain and error.retryable
            if late and not self._not_sent(i, error):
                # past the deadline the request is out of our hands: a duplicate delivery
                # of it may have run, whatever this one says (a final "no" is the
                # participant's stored answer for the key, so it stands). Not so for an
                # attempt that provably never left this worker (``NOT_SENT``).
                error = error.model_copy(update={"uncertain": True})
            self._failed(p, error)

    def on_timer(self) -> None:
        p = self.s.pending
        if self.s.resting or p is None or self.now < p.deadline:
            return
        if p.waiting == "backoff":
            if p.phase == "action" and self.s.cancel_requested:
                self._stop_step(p.step)
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
                uncertain=True,  # the participant may still apply it
                message=f"no result for attempt {p.attempt} within {timeout:g}s",
            ),
        )

    def on_cancel(self, reason: str) -> None:
        parked = self.s.status == "parked"
        if (self.s.resting and not parked) or self.s.status == "compensating":
            return
        if self.s.cancel_requested:
            return
        self.s.cancel_requested = reason
        self.dirty = True
        p = self.s.pending
        if parked:
            self._unwind("cancelled")  # the maybe-applied step is compensated first
        elif p is not None and p.waiting == "backoff":
            self._stop_step(p.step)
            self._unwind("cancelled")
        # an attempt in flight: its result (or deadline) decides, then the unwind starts

    def on_retry_compensation(self) -> None:
        i = self._unwinding().current
        if self.s.status != "compensation_failed" or i is None:
            return
        self.s.status = "compensating"
        self.emit(ev.SagaCompensating, data={"reason": "operator_retry"})
        attempt = self.s.steps[i].compensation_attempts + 1
        self.dispatch("compensation", i, attempt=attempt, round_start=attempt)

    def on_resolve(self, msg: ResolveStep) -> None:
        i = self.s.current
        st = self.s.steps[i]
        if self.s.status != "parked" or msg.step != st.name:
            where = f"step {st.name!r}" if self.s.status == "parked" else "no step"
            raise _Rejected(
                f"resolve {msg.step!r} for saga {self.s.saga_id!r}: it is {self.s.status} and "
                f"{where} awaits a resolution; see `python -m coordinator status`"
            )
        if msg.resolution == "applied":
            output, error = self._checked_output(i, msg.output)
            if error is not None:
                raise _Rejected(f"resolve {msg.step!r} as applied: {error.message}")
            self.emit(ev.StepResolved, step=i, data={"resolution": "applied"})
            self.s.status = "running"
            self._step_done(i, st.attempts, output)
        elif msg.resolution == "not_applied":
            # the step's undo still runs first, by key: a no-op tombstone for a do that
            # never happened, which refuses any straggling duplicate of its request
            self.emit(ev.StepResolved, step=i, data={"resolution": "not_applied"})
            self.s.status = "running"
            self._unwind("step_failed")
        else:
            self.emit(ev.StepResolved, step=i, data={"resolution": "retry"})
            self.s.status = "running"
            self.dispatch("action", i, attempt=st.attempts + 1, round_start=st.attempts + 1)

    # -- rules ----------------------------------------------------------------------

    def _not_sent(self, i: int, error: ev.ErrorInfo) -> bool:
        """An attempt that provably never left this worker (see ``messages.NOT_SENT``).

        Only the coordinator's own in-process step tasks say so, each launched once for
        its attempt; a remote participant cannot know what our worker never sent.
        """
        return error.type == NOT_SENT and not self.saga.steps[i].service.remote

    def _late_undo(self, i: int, attempt: int) -> bool:
        """A compensation success for the step a ``compensation_failed`` saga stopped at."""
        return (
            self.s.status == "compensation_failed"
            and self._unwinding().current == i
            and attempt <= self.s.steps[i].compensation_attempts
        )

    def _checked_output(
        self, i: int, output: dict[str, Any] | None
    ) -> tuple[dict[str, Any] | None, ev.ErrorInfo | None]:
        """Validate an output where it arrives, so it can never poison later steps."""
        step = self.saga.steps[i]
        model = self.saga.output_models()[step.name]
        if model is None:
            return output, None
        try:
            if output is None:  # ok without the declared output poisons as much as a bad one
                raise ValidationError.from_exception_data(
                    model.__name__, [{"type": "missing", "loc": ("output",), "input": None}]
                )
            model.model_validate(output)
        except ValidationError as exc:
            return (
                None,
                ev.ErrorInfo(
                    type="OutputValidationError",
                    retryable=False,
                    uncertain=True,  # the participant said it acted
                    message=f"{self.saga.label} step {step.name!r}: output does not match "
                    f"{model.__name__}: {_field_errors(exc)}"[:1000],
                ),
            )
        return output, None

    def _action_succeeded(self, p: Pending, attempt: int, output: dict[str, Any] | None) -> None:
        output, error = self._checked_output(p.step, output)
        if error is not None:
            self._failed(p.model_copy(update={"attempt": attempt}), error)
            return
        self.s.pending = None
        self._step_done(p.step, attempt, output)

    def _step_done(self, i: int, attempt: int, output: dict[str, Any] | None) -> None:
        st = self.s.steps[i]
        st.status, st.output, st.error = "succeeded", output, None
        self.emit(ev.StepSucceeded, step=i, attempt=attempt, data=output)
        if self.s.cancel_requested:
            self._unwind("cancelled")
        elif i + 1 < len(self.saga.steps):
            self.s.current = i + 1
            self.dispatch("action", i + 1, attempt=1)
        else:
            self.s.status = "completed"
            self.emit(ev.SagaCompleted)

    def _compensation_succeeded(self, p: Pending) -> None:
        self.s.pending = None
        self.s.steps[p.step].status = "compensated"
        self.emit(ev.CompensationSucceeded, step=p.step, attempt=p.attempt)
        self._save(self._unwinding().advance())
        self._continue_unwind()

    def _late_success(self, i: int, msg: StepResult) -> None:
        """A success for an attempt no longer awaited: proof that the effect happened."""
        st, status = self.s.steps[i], self.s.status
        if st.status == "succeeded" or status in ("completed", "running"):
            # a duplicate of a success already applied; while running, only the pending
            # step can succeed, and its successes are awaited, not late
            return
        if status == "parked" and i == self.s.current:
            output, error = self._checked_output(i, msg.output)
            st.late_success = True  # proof it happened, even with a malformed output
            self.emit(
                ev.StepLateSuccess, step=i, attempt=msg.attempt, data={"compensation": "none"}
            )
            if error is None:  # the participant resolved the park itself
                self.s.status = "running"
                self._step_done(i, msg.attempt, output)
            return
        if st.late_success:
            return  # recorded once; the unwind already accounts for it
        if not st.uncertain and st.status != "failed":
            # its success was applied before the unwind began: a redelivered duplicate
            # (e.g. a step request re-run after a crash), not news
            return
        st.late_success = True
        if st.output is None:
            st.output, _ = self._checked_output(i, msg.output)  # the undo may need it
        unwind = self._unwinding()
        has_compensation = self.saga.steps[i].compensation is not None
        if not has_compensation or unwind.covers(i):
            what = "covered" if has_compensation else "none"
            self.emit(ev.StepLateSuccess, step=i, attempt=msg.attempt, data={"compensation": what})
            return
        st.uncertain = True  # a definite failure was contradicted: treat it as applied
        self.emit(
            ev.StepLateSuccess, step=i, attempt=msg.attempt, data={"compensation": "scheduled"}
        )
        p = self.s.pending
        if status in ("compensating", "compensation_failed"):
            in_flight = p is not None and p.phase == "compensation"
            self._save(unwind.cover(i, in_flight=in_flight))
        elif status in ("compensated", "cancelled"):
            self._save(unwind.extend(i))
            self.s.status = "compensating"
            self.emit(ev.SagaCompensating, data={"reason": "late_success", "plan": [st.name]})
            self._continue_unwind()
        # running: a step that is not the pending one cannot be late (it never ran again)

    def _failed(self, p: Pending, error: ev.ErrorInfo) -> None:
        step, st = self.saga.steps[p.step], self.s.steps[p.step]
        st.error = error
        salt = f"{self.s.saga_id}:{step.name}:{p.phase}"
        in_round = p.attempt - p.round_start + 1
        if p.phase == "action":
            st.uncertain = st.uncertain or error.uncertain
            if self._not_sent(p.step, error):
                st.not_sent += 1
            retry = not self.s.cancel_requested and step.retry.can_retry(
                attempt=in_round, error_type=error.type, retryable=error.retryable
            )
            self.emit(ev.StepFailed, step=p.step, attempt=p.attempt, error=error, retrying=retry)
            if retry:
                self._backoff(p, step.retry.delay(in_round, salt=salt))
                return
            self.s.error = error
            self._stop_step(p.step)
            if st.uncertain and step.on_uncertain == "park" and not self.s.cancel_requested:
                self.s.status = "parked"
                self.emit(
                    ev.SagaParked,
                    step=p.step,
                    error=error,
                    data={"reason": "uncertain outcome; resolve as applied, not_applied or retry"},
                )
                return
            self._unwind("cancelled" if self.s.cancel_requested else "step_failed")
            return
        decision = on_compensation_failure(
            step.compensation_retry,
            attempt_in_round=in_round,
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

    def _stop_step(self, i: int) -> None:
        """The step's action stops being retried: failed, or maybe applied.

        A *final* definite failure (non-retryable: the participant's stored "no" for this
        key) closes the key, even after earlier uncertain attempts: under the contract
        those attempts share the key, so any of them arriving later gets the same "no".
        A retryable failure leaves the key open: a straggling duplicate of an earlier
        request may still apply it, so the step counts as maybe applied and its undo
        (which tombstones the key) runs. Unless no attempt ever left this worker (every
        one ``NOT_SENT``): then there is no request to straggle and the step failed.
        """
        st = self.s.steps[i]
        error = st.error
        never_sent = st.not_sent >= st.attempts > 0 and not st.uncertain
        if error is not None and not error.retryable and not error.uncertain:
            st.uncertain = False
        elif error is None or (error.retryable and not never_sent):
            st.uncertain = True
        st.status = "maybe_applied" if st.uncertain else "failed"
        self.s.pending = None

    def _backoff(self, p: Pending, delay: timedelta) -> None:
        if delay <= timedelta(0):
            self.dispatch(p.phase, p.step, attempt=p.attempt + 1, round_start=p.round_start)
            return
        self.s.pending = p.model_copy(update={"waiting": "backoff", "deadline": self.now + delay})
        self.dirty = True

    def _unwinding(self) -> Unwind:
        return Unwind(tuple(self.s.plan), self.s.cursor)

    def _save(self, unwind: Unwind) -> None:
        self.s.plan, self.s.cursor = list(unwind.plan), unwind.cursor
        self.dirty = True

    def _unwind(self, reason: str) -> None:
        steps = self.s.steps
        unwind = Unwind.begin(
            applied=[i for i, st in enumerate(steps) if st.status == "succeeded"],
            maybe_applied=[i for i, st in enumerate(steps) if st.uncertain],
            has_compensation=lambda i: self.saga.steps[i].compensation is not None,
        )
        self._save(unwind)
        self.s.status = "compensating"
        names = [self.saga.steps[i].name for i in unwind.plan]
        self.emit(ev.SagaCompensating, data={"reason": reason, "plan": names})
        self._continue_unwind()

    def _continue_unwind(self) -> None:
        i = self._unwinding().current
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
        if self.s.status in TERMINAL and self.s.finished_at is None:
            self.s.finished_at = self.now
            keep = self.retention.keep
            self.s.expires_at = None if keep is None else self.now + keep
        elif self.s.status not in TERMINAL:
            self.s.finished_at = self.s.expires_at = None  # a re-opened unwind
        # serialized once: these payloads are what the shell sends, and what it re-sends
        # if this message is redelivered after a crash
        self.s.last_outbox = [stored_request(r) for r in self.requests] + [
            {"kind": "event", "payload": e.model_dump_json()} for e in self.events
        ]
        return Transition(self.s, changed=True, events=self.events, requests=self.requests)
