"""Unwinding a saga: which compensations run, in which order, with which retry policy,
and what happens when one keeps failing. Also the HTTP participant call used by both
actions and compensations.

This package imports nothing else of the project.
"""

from compensations.errors import (
    BusinessHttpError,
    CompensationError,
    HttpCallError,
    PolicyError,
    TransientHttpError,
)
from compensations.http import IDEMPOTENCY_HEADER, TRANSPORT_RETRY, send_json
from compensations.policy import DEFAULT_COMPENSATION_RETRY, DEFAULT_RETRY, NO_RETRY, RetryPolicy
from compensations.unwind import (
    Escalate,
    RetryLater,
    compensation_plan,
    next_in_plan,
    on_compensation_failure,
)

__all__ = [
    "DEFAULT_COMPENSATION_RETRY",
    "DEFAULT_RETRY",
    "IDEMPOTENCY_HEADER",
    "NO_RETRY",
    "TRANSPORT_RETRY",
    "BusinessHttpError",
    "CompensationError",
    "Escalate",
    "HttpCallError",
    "PolicyError",
    "RetryLater",
    "RetryPolicy",
    "TransientHttpError",
    "compensation_plan",
    "next_in_plan",
    "on_compensation_failure",
    "send_json",
]
