"""The retry figures the README states are the ones the default policies produce."""

from __future__ import annotations

from datetime import timedelta

from compensations import DEFAULT_COMPENSATION_RETRY, DEFAULT_RETRY, RetryPolicy
from coordinator._http import TRANSPORT_RETRY
from tests.readme import python_block


def retry_window(policy: RetryPolicy) -> float:
    """Seconds of backoff between the first and the last attempt."""
    return sum(policy.delay(a).total_seconds() for a in range(1, policy.maximum_attempts))


def test_default_action_retries_give_up_after_about_a_second() -> None:
    assert DEFAULT_RETRY.maximum_attempts == 3
    assert 0.5 < retry_window(DEFAULT_RETRY) < 0.7  # "0.2 s, 0.4 s"
    per_attempt = retry_window(TRANSPORT_RETRY)  # "about 0.15 s per attempt"
    assert 0.12 < per_attempt < 0.18
    assert retry_window(DEFAULT_RETRY) + 3 * per_attempt < 1.2  # "about 1 second"


def test_default_compensation_retries_give_up_after_about_8_seconds() -> None:
    assert DEFAULT_COMPENSATION_RETRY.maximum_attempts == 5
    assert 7 < retry_window(DEFAULT_COMPENSATION_RETRY) < 9


def test_the_five_minute_policy_of_the_readme_rides_out_five_minutes() -> None:
    example: dict[str, object] = {"RetryPolicy": RetryPolicy, "timedelta": timedelta}
    policy = eval(python_block("### Default retry policies"), example)
    assert isinstance(policy, RetryPolicy)
    assert 5 * 60 < retry_window(policy) < 7 * 60  # "≈ 6 min of retries"
