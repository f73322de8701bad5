"""One handler per inbox message kind: a step result, a timer, cancel, retry, resolve."""

from __future__ import annotations

from coordinator import events as ev
from coordinator._machine.outcomes import Outcomes
from coordinator._machine.run import Rejected
from coordinator._messages import (
    ResolveStep,
    StepResult,
)
from coordinator._state import Pending


class Run(Outcomes):
    """A transition in progress, driven by one inbox message."""

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
            raise Rejected(
                f"resolve {msg.step!r} for saga {self.s.saga_id!r}: it is {self.s.status} and "
                f"{where} awaits a resolution; see `python -m coordinator status`"
            )
        if msg.resolution == "applied":
            output, error = self._checked_output(i, msg.output)
            if error is not None:
                raise Rejected(f"resolve {msg.step!r} as applied: {error.message}")
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
