"""A transition in progress: the saga's record, what it emits, and the unwind.

:class:`RunCore` owns the private copy of the state, emits lifecycle events (one
``seq`` each), dispatches step requests with their durable deadlines, starts and
advances the unwind, and finishes into a :class:`Transition`. The rules that decide
*what* to do live in :mod:`.outcomes` and :mod:`.handlers`.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Protocol

from pydantic import ValidationError

from compensations import Unwind
from coordinator import events as ev
from coordinator._definition import Saga
from coordinator._messages import (
    Phase,
    StepRequest,
    idempotency_key,
    validated,
)
from coordinator._outbox import stored_request
from coordinator._retention import FOREVER, Retention
from coordinator._state import TERMINAL, Pending, SagaState


class Definitions(Protocol):
    """Where the machine finds definitions (a SagaRegistry, or a test's stand-in)."""

    def get(self, name: str, version: int | None = None) -> Saga[Any]:
        """The definition of ``name`` at ``version`` (the latest when None)."""


class Rejected(Exception):
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
    #: the lifecycle events' JSON, in ``seq`` order (as stored in the outbox and sent)
    payloads: list[str] = field(default_factory=list)
    requests: list[StepRequest] = field(default_factory=list)
    rejected: str | None = None
    replayed: bool = False
    #: retention ended: delete the record (a tombstone on the changelog)
    deleted: bool = False

    @cached_property
    def events(self) -> list[ev.LifecycleEvent]:
        """The lifecycle events, decoded from ``payloads`` when asked."""
        return [ev.parse_event(p) for p in self.payloads]

    @property
    def outbox(self) -> list[dict[str, str]]:
        """What to send, as stored: step requests first, then lifecycle events.

        Requests of the ``unstored`` services (``transition``) are left out: the caller
        runs them itself.

        Requests are stored without the input and outputs the record already holds:
        send each item's ``coordinator._outbox.render(item, state)``.
        """
        if self.state is None or not (self.changed or self.replayed):
            return []
        return self.state.last_outbox


def field_errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '.'}: {e['msg']}" for e in exc.errors())


class RunCore:
    """One transition in progress: a private copy of the state plus what to emit."""

    def __init__(
        self,
        saga: Saga[Any],
        state: SagaState,
        now: datetime,
        reply_to: str,
        retention: Retention = FOREVER,
        unstored: Container[str] = frozenset(),
    ):
        self.saga = saga
        self.s = state
        self.now = now
        self.reply_to = reply_to
        self.retention = retention
        self.payloads: list[str] = []  # the events emitted, as JSON
        self.requests: list[StepRequest] = []
        self.dirty = False
        #: services whose requests are not stored (``transition(unstored=...)``)
        self.unstored = unstored

    def emit(self, kind: type[Any], *, step: int | None = None, **fields: Any) -> None:
        self.dirty = True
        s = self.s
        s.seq = seq = s.seq + 1
        if step is not None:
            fields["step"] = self.saga.steps[step].name
            fields["service"] = self.saga.steps[step].service.name
        self.payloads.append(
            ev.event_json(
                kind,
                event_id=f"{s.saga_id}:{seq}",
                saga_id=s.saga_id,
                saga_type=s.saga_type,
                saga_version=s.saga_version,
                seq=seq,
                occurred_at=self.now,
                business_key=s.business_key,
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
        s = self.s
        s.pending = validated(
            Pending,
            {
                "phase": phase,
                "step": i,
                "attempt": attempt,
                "waiting": "result",
                "deadline": deadline,
                "round_start": round_start,
            },
        )
        self.requests.append(
            validated(
                StepRequest,
                {
                    "saga_id": s.saga_id,
                    "saga_type": s.saga_type,
                    "saga_version": s.saga_version,
                    "step": step.name,
                    "service": step.service.name,
                    "phase": phase,
                    "attempt": attempt,
                    "idempotency_key": idempotency_key(s.saga_id, step.name, phase),
                    "compensates": (
                        idempotency_key(s.saga_id, step.name, "action")
                        if phase == "compensation"
                        else None
                    ),
                    "input": s.input,
                    "outputs": {x.name: x.output for x in s.steps if x.output is not None},
                    "deadline": deadline,
                    "reply_to": self.reply_to,
                },
            )
        )

    def _stop_step(self, i: int) -> None:
        """The step's action stops being retried: failed, or maybe applied.

        A *final* definite failure (non-retryable: the participant's stored "no" for this
        key) closes the key, even after earlier uncertain attempts: under the contract
        those attempts share the key, so any of them arriving later gets the same "no".
        A retryable failure leaves the key open: a straggling duplicate of an earlier
        request may still apply it, so the step counts as maybe applied and its undo
        (which tombstones the key) runs. That holds even when every attempt reported
        ``NOT_SENT``: "never sent" is only as true as "one sender per attempt", and a
        worker that lost its partitions without knowing (a starved event loop past the
        session timeout) may have launched the same attempt the new owner launched. The
        undo of a do that never arrived is harmless under the contract (a tombstone), so
        the cost of being wrong is one extra call, never an effect left standing.
        """
        st = self.s.steps[i]
        error = st.error
        if error is not None and not error.retryable and not error.uncertain:
            st.uncertain = False
        elif error is None or error.retryable:
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
        elif self.s.status not in TERMINAL and (
            self.s.finished_at is not None or self.s.expires_at is not None
        ):
            self.s.finished_at = self.s.expires_at = None  # a re-opened unwind
        # serialized once: these payloads are what the shell sends, and what it re-sends
        # if this message is redelivered after a crash
        unstored = self.unstored
        self.s.last_outbox = [
            stored_request(r) for r in self.requests if r.service not in unstored
        ] + [{"kind": "event", "payload": p} for p in self.payloads]
        return Transition(self.s, changed=True, payloads=self.payloads, requests=self.requests)
