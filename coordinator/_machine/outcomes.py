"""What a step's result means: success, definite or uncertain failure, late success.

Rules (see the package docstring): a retryable failure is retried after its backoff;
when retries end the step is failed (a final definite failure) or maybe applied;
an output is validated where it arrives; a late success is never dropped.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from compensations import Escalate, on_compensation_failure
from coordinator import events as ev
from coordinator._machine.run import RunCore, field_errors
from coordinator._messages import (
    NOT_SENT,
    StepResult,
)
from coordinator._state import Pending


class Outcomes(RunCore):
    """The rules for a step's results, on top of the transition in progress."""

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
                    f"{model.__name__}: {field_errors(exc)}"[:1000],
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
        st.status, st.output = "succeeded", output
        if st.error is not None:
            st.error = None
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
