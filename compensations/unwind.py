"""The unwinding rules, as pure functions.

Garcia-Molina & Salem: either T1..Tn all complete, or T1..Tj complete and then Cj..C1 run.
So the plan is exactly the completed steps, newest first, skipping those that declare no
compensation; it runs one compensation at a time; a persisted cursor (the index into the
plan) makes a crash mid-unwind resume where it stopped; a compensation that exhausts its
retries escalates (the saga rests in ``compensation_failed`` until an operator retries).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from compensations.policy import RetryPolicy


def compensation_plan(
    completed: Sequence[int], has_compensation: Callable[[int], bool]
) -> tuple[int, ...]:
    """Step indexes to compensate, in the order to run them (reverse of completion)."""
    ordered = sorted(set(completed))
    return tuple(i for i in reversed(ordered) if has_compensation(i))


def next_in_plan(plan: Sequence[int], cursor: int) -> int | None:
    """The step index at ``cursor``, or None when the unwind is finished."""
    return plan[cursor] if 0 <= cursor < len(plan) else None


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
