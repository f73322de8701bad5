"""Unwinding a saga: which compensations run, in which order, with which retry policy.

Also what happens when a compensation keeps failing.

This package imports nothing else of the project.
"""

from compensations._errors import CompensationError, PolicyError
from compensations._policy import DEFAULT_COMPENSATION_RETRY, DEFAULT_RETRY, NO_RETRY, RetryPolicy
from compensations._unwind import Escalate, RetryLater, Unwind, on_compensation_failure

__all__ = [
    "DEFAULT_COMPENSATION_RETRY",
    "DEFAULT_RETRY",
    "NO_RETRY",
    "CompensationError",
    "Escalate",
    "PolicyError",
    "RetryLater",
    "RetryPolicy",
    "Unwind",
    "on_compensation_failure",
]
