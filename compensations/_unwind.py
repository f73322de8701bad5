"""The unwinding rules, as a pure value object.

Garcia-Molina & Salem: either T1..Tn all complete, or T1..Tj complete and then Cj..C1 run.
Our plan is the steps whose effect happened **or may have happened**, newest first,
skipping those that declare no compensation:

* *applied*: the step's action succeeded;
* *maybe applied*: some attempt ended on an uncertain outcome (timeout, 5xx, lost reply)
  and no attempt succeeded. Its compensation runs with the step's undo key; under the
  participant contract (an undo whose do never arrived leaves a tombstone, so the late
  do is refused) that is safe whether or not the effect happened.

It runs one compensation at a time; a persisted cursor (the index into the plan) makes a
crash mid-unwind resume where it stopped. A compensation that exhausts its retries
escalates: the saga rests in ``compensation_failed`` until an operator retries, which
starts a new *round* with a fresh retry budget.

A *late success* (a success for an attempt the saga no longer waits for) is proof that
the effect happened. If the plan already holds the step it is covered; otherwise the step
is inserted into the part of the plan not yet run, keeping reverse step order, after the
compensation in flight.

This package imports nothing else of the project.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import timedelta

from compensations._policy import RetryPolicy


@dataclass(frozen=True)
class Unwind:
    """A compensation plan (step indexes, in the order to run) and its cursor."""

    plan: tuple[int, ...] = ()
    cursor: int = 0

    @classmethod
    def begin(
        cls,
        *,
        applied: Iterable[int],
        maybe_applied: Iterable[int] = (),
        has_compensation: Callable[[int], bool],
    ) -> Unwind:
        """The plan for steps that applied or may have applied, newest first."""
        steps = set(applied) | set(maybe_applied)
        return cls(tuple(i for i in sorted(steps, reverse=True) if has_compensation(i)))

    @property
    def current(self) -> int | None:
        """The step whose compensation runs now (or next), None when the unwind is done."""
        return self.plan[self.cursor] if 0 <= self.cursor < len(self.plan) else None

    @property
    def done(self) -> bool:
        """True when no compensation is left to run."""
        return self.current is None

    def advance(self) -> Unwind:
        """The current compensation succeeded: move to the next one."""
        return replace(self, cursor=self.cursor + 1)

    def covers(self, step: int) -> bool:
        """Whether the plan holds ``step`` (run already, running, or still to run)."""
        return step in self.plan

    def cover(self, step: int, *, in_flight: bool) -> Unwind:
        """Insert a step discovered late into the part of the plan not yet run.

        Keeps reverse step order among the remaining compensations; never before the
        compensation in flight (``in_flight``), which cannot be called back.
        """
        if step in self.plan:
            return self
        pos = self.cursor + (1 if in_flight else 0)
        while pos < len(self.plan) and self.plan[pos] > step:
            pos += 1
        return replace(self, plan=(*self.plan[:pos], step, *self.plan[pos:]))

    def extend(self, step: int) -> Unwind:
        """Re-open a finished unwind for one more step (a late success after it ended)."""
        return replace(self, plan=(*self.plan, step))


@dataclass(frozen=True)
class RetryLater:
    """Run the same compensation again after ``delay``."""

    delay: timedelta


@dataclass(frozen=True)
class Escalate:
    """Stop unwinding; the saga becomes ``compensation_failed`` until an operator acts."""

    reason: str


def on_compensation_failure(
    policy: RetryPolicy,
    *,
    attempt_in_round: int,
    error_type: str,
    retryable: bool,
    salt: str,
) -> RetryLater | Escalate:
    """Decide what follows a failed compensation attempt.

    ``attempt_in_round`` counts attempts since the unwind (or the operator's retry)
    started, so an operator retry grants a fresh budget.
    """
    if policy.can_retry(attempt=attempt_in_round, error_type=error_type, retryable=retryable):
        return RetryLater(policy.delay(attempt_in_round, salt=salt))
    if not retryable or error_type in policy.non_retryable_names:
        return Escalate(f"non-retryable {error_type}")
    return Escalate(f"retries exhausted after {attempt_in_round} attempts")
