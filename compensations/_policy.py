"""Retry policies: one frozen object per step action or compensation.

The coordinator turns a policy into *durable* retries (a deadline in the saga table that
survives crashes); in-process callers turn the same object into a tenacity retrier with
:meth:`RetryPolicy.tenacity`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import tenacity

from compensations._errors import PolicyError


def _error_name(error: type[BaseException] | str) -> str:
    return error if isinstance(error, str) else error.__name__


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently to retry.

    Attributes:
        maximum_attempts: total attempts including the first (1 = never retry).
        initial_interval: delay before the second attempt.
        backoff_coefficient: each further delay is multiplied by this.
        maximum_interval: upper bound of any delay.
        jitter: fraction (0..1) of each delay that is randomised, so retries of many
            sagas do not arrive in lockstep. Deterministic per (saga, step, attempt),
            so a replayed transition computes the same deadline.
        non_retryable_errors: error types (classes or their names) that are business
            failures: they are never retried and start compensation at once.
    """

    maximum_attempts: int = 3
    initial_interval: timedelta = timedelta(milliseconds=200)
    backoff_coefficient: float = 2.0
    maximum_interval: timedelta = timedelta(seconds=10)
    jitter: float = 0.1
    non_retryable_errors: tuple[type[BaseException] | str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.maximum_attempts < 1:
            raise PolicyError(
                f"RetryPolicy.maximum_attempts={self.maximum_attempts}: must be >= 1 "
                "(1 means a single attempt, no retry)"
            )
        if self.initial_interval < timedelta(0) or self.maximum_interval < self.initial_interval:
            raise PolicyError(
                "RetryPolicy intervals: need 0 <= initial_interval <= maximum_interval, got "
                f"{self.initial_interval} and {self.maximum_interval}"
            )
        if self.backoff_coefficient < 1.0:
            raise PolicyError(
                f"RetryPolicy.backoff_coefficient={self.backoff_coefficient}: must be >= 1.0"
            )
        if not 0.0 <= self.jitter <= 1.0:
            raise PolicyError(f"RetryPolicy.jitter={self.jitter}: must be between 0 and 1")

    @property
    def non_retryable_names(self) -> frozenset[str]:
        """Names of the error types that are never retried."""
        return frozenset(_error_name(e) for e in self.non_retryable_errors)

    def can_retry(self, *, attempt: int, error_type: str, retryable: bool) -> bool:
        """Whether ``attempt`` (1-based, just failed) may be followed by another."""
        if not retryable or error_type in self.non_retryable_names:
            return False
        return attempt < self.maximum_attempts

    def delay(self, attempt: int, *, salt: str = "") -> timedelta:
        """Delay after failed ``attempt`` (1-based); jitter is a pure function of ``salt``."""
        base = self.initial_interval.total_seconds() * self.backoff_coefficient ** (attempt - 1)
        base = min(base, self.maximum_interval.total_seconds())
        if self.jitter and base:
            digest = hashlib.blake2b(f"{salt}:{attempt}".encode(), digest_size=8).digest()
            unit = int.from_bytes(digest, "big") / 2**64  # uniform in [0, 1)
            base *= 1.0 - self.jitter + 2 * self.jitter * unit
        return timedelta(seconds=min(base, self.maximum_interval.total_seconds()))

    def tenacity(
        self, *, retry_if: Callable[[BaseException], bool] | None = None, **overrides: Any
    ) -> tenacity.AsyncRetrying:
        """An async tenacity retrier with this policy's attempts, backoff and jitter."""
        names = self.non_retryable_names

        def should_retry(exc: BaseException) -> bool:
            if type(exc).__name__ in names or not getattr(exc, "retryable", True):
                return False
            return retry_if(exc) if retry_if is not None else True

        options: dict[str, Any] = {
            "stop": tenacity.stop_after_attempt(self.maximum_attempts),
            "wait": tenacity.wait_exponential_jitter(
                multiplier=self.initial_interval.total_seconds(),
                max=self.maximum_interval.total_seconds(),
                exp_base=self.backoff_coefficient,
                jitter=self.jitter * self.initial_interval.total_seconds(),
            ),
            "retry": tenacity.retry_if_exception(should_retry),
            "reraise": True,
        }
        options.update(overrides)
        return tenacity.AsyncRetrying(**options)


DEFAULT_RETRY = RetryPolicy()
DEFAULT_COMPENSATION_RETRY = RetryPolicy(
    maximum_attempts=5,
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=30),
)
NO_RETRY = RetryPolicy(maximum_attempts=1)
