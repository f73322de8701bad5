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
* Retention (``coordinator._retention``): at ``expires_at`` a finished saga shrinks to a
  compact marker, and the marker is deleted at its own (the owning worker applies both
  itself, ``coordinator._expiry``; a ``timer`` record does the same here). A marker
  answers a second start with nothing and ignores everything else.
"""

from __future__ import annotations

from collections.abc import Container
from datetime import datetime

from pydantic import ValidationError

from coordinator import events as ev
from coordinator._errors import UnknownSagaError
from coordinator._machine.handlers import Run
from coordinator._machine.run import Definitions, Rejected, Transition, field_errors
from coordinator._messages import (
    CancelSaga,
    InboxMessage,
    ResolveStep,
    RetryCompensation,
    StartSaga,
    StepResult,
    TimerFired,
    validated,
)
from coordinator._outbox import request_of
from coordinator._retention import FOREVER, Retention, expire, is_due
from coordinator._state import TERMINAL, SagaState


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
    unstored: Container[str] = frozenset(),
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
        unstored: services whose step requests the caller runs itself and never sends
            or re-sends (inline steps, in-process attempts): they are in ``requests``
            but not in the stored outbox (nothing to serialise for them).
    """
    if now.tzinfo is None:
        raise ValueError("transition(now=...) needs a timezone-aware datetime")
    if state is not None and message_id is not None and state.last_message == message_id:
        return _replay(state)
    if isinstance(message, StartSaga):
        if state is not None:
            return Transition(state)  # starting an existing saga returns it; never runs twice
        return _start(registry, message, now, message_id, reply_to, retention, unstored)
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
    own = state.model_copy(deep=True) if copy else state
    run = Run(saga, own, now, reply_to, retention, unstored)
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
    except Rejected as exc:
        return Transition(state, rejected=str(exc))
    return run.finish(message_id)


def _expire(
    state: SagaState, now: datetime, message_id: str | None, retention: Retention
) -> Transition:
    """Retention of a finished saga by a ``timer`` record: full record → marker → deleted.

    The owning worker expires its sagas itself (``coordinator._expiry``); a timer record
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
            out.payloads.append(item["payload"])
        else:
            out.requests.append(request_of(item, state))
    return out


def _start(
    registry: Definitions,
    msg: StartSaga,
    now: datetime,
    message_id: str | None,
    reply_to: str,
    retention: Retention,
    unstored: Container[str],
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
            f"{field_errors(exc)}",
        )
    state = validated(
        SagaState,
        {
            "saga_id": msg.saga_id,
            "saga_type": saga.name,
            "saga_version": saga.version,
            "business_key": msg.business_key,
            "input": value.model_dump(mode="json"),
            "steps": [{"name": s.name, "service": s.service.name} for s in saga.steps],
            "started_at": now,
            "updated_at": now,
        },
    )
    run = Run(saga, state, now, reply_to, retention, unstored)
    run.emit(ev.SagaStarted, data=state.input)
    run.dispatch("action", 0, attempt=1)
    return run.finish(message_id)
