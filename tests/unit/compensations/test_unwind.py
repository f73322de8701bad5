"""The unwinding rules as a value object: plan, cursor, late insertion, escalation."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from compensations import Escalate, RetryLater, RetryPolicy, Unwind, on_compensation_failure


def everything(i: int) -> bool:
    return True


def test_plan_is_applied_and_maybe_applied_steps_newest_first() -> None:
    unwind = Unwind.begin(applied=[0, 1], maybe_applied=[2], has_compensation=everything)
    assert unwind.plan == (2, 1, 0) and unwind.current == 2


def test_steps_without_compensation_are_skipped() -> None:
    unwind = Unwind.begin(applied=[0, 1, 2], has_compensation=lambda i: i != 1)
    assert unwind.plan == (2, 0)


def test_cursor_advances_to_done() -> None:
    unwind = Unwind.begin(applied=[0, 1], has_compensation=everything)
    assert unwind.advance().current == 0 and unwind.advance().advance().done


def test_a_late_step_goes_after_the_compensation_in_flight() -> None:
    unwind = Unwind.begin(applied=[0, 1], has_compensation=everything)  # (1, 0), 1 running
    assert unwind.cover(3, in_flight=True).plan == (1, 3, 0)
    assert unwind.cover(3, in_flight=False).plan == (3, 1, 0)


def test_cover_is_idempotent_and_extend_reopens() -> None:
    unwind = Unwind.begin(applied=[0, 1], has_compensation=everything)
    assert unwind.cover(1, in_flight=True) == unwind
    done = unwind.advance().advance()
    reopened = done.extend(2)
    assert reopened.current == 2 and reopened.plan == (1, 0, 2)


@given(
    applied=st.sets(st.integers(0, 9)),
    late=st.lists(st.integers(0, 9), max_size=5),
    progress=st.integers(0, 10),
    in_flight=st.booleans(),
)
def test_every_step_is_compensated_once_and_the_remaining_order_is_reverse(
    applied: set[int], late: list[int], progress: int, in_flight: bool
) -> None:
    unwind = Unwind.begin(applied=applied, has_compensation=everything)
    for _ in range(min(progress, len(unwind.plan))):
        unwind = unwind.advance()
    flight = in_flight and not unwind.done  # a compensation is running now
    ran = unwind.plan[: unwind.cursor + (1 if flight else 0)]
    for step in late:
        unwind = unwind.cover(step, in_flight=flight)
    assert sorted(unwind.plan) == sorted(applied | set(late))  # each exactly once
    assert unwind.plan[: len(ran)] == ran  # what ran (or runs) is never moved
    rest = unwind.plan[len(ran) :]
    assert list(rest) == sorted(rest, reverse=True)  # what is left runs newest first


def test_compensation_failures_retry_then_escalate() -> None:
    policy = RetryPolicy(maximum_attempts=2, initial_interval=timedelta(milliseconds=10))
    first = on_compensation_failure(
        policy, attempt_in_round=1, error_type="Down", retryable=True, salt="x"
    )
    assert isinstance(first, RetryLater)
    second = on_compensation_failure(
        policy, attempt_in_round=2, error_type="Down", retryable=True, salt="x"
    )
    assert second == Escalate("retries exhausted after 2 attempts")
    never = on_compensation_failure(
        policy, attempt_in_round=1, error_type="Gone", retryable=False, salt="x"
    )
    assert never == Escalate("non-retryable Gone")
