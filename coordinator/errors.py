"""Exceptions of the ``coordinator`` package.

Tree::

    SagaError                      root of this package
    ├── DefinitionError            a saga definition is invalid (names saga, step and fix)
    ├── UnknownSagaError           no definition registered for a saga type/version
    ├── StepFailure                raised by a step action to fail the attempt
    │   └── BusinessFailure        non-retryable: compensation starts at once
    ├── SagaNotFoundError          a query named a saga id the coordinator does not hold
    └── CoordinatorUnavailable     the worker that owns the saga did not answer
"""

from __future__ import annotations


class SagaError(Exception):
    """Root of every error raised by ``coordinator``."""


class DefinitionError(SagaError, ValueError):
    """A saga definition is invalid; the message names the saga, the step and the fix."""


class UnknownSagaError(SagaError, LookupError):
    """No definition is registered for this saga type and version."""


class StepFailure(SagaError):
    """Raise from a step action to fail this attempt.

    Args:
        message: what went wrong, for the saga's error and the lifecycle event.
        non_retryable: True for a business failure (card declined): no further attempt,
            compensation starts at once.
        type: the error type recorded in events; defaults to the class name.
    """

    def __init__(self, message: str, *, non_retryable: bool = False, type: str | None = None):
        super().__init__(message)
        self.non_retryable = non_retryable
        self.type = type or self.__class__.__name__


class BusinessFailure(StepFailure):
    """A business refusal (declined, out of stock): never retried."""

    def __init__(self, message: str, *, type: str | None = None):
        super().__init__(message, non_retryable=True, type=type)


class SagaNotFoundError(SagaError, LookupError):
    """The coordinator holds no saga with this id."""


class CoordinatorUnavailable(SagaError):
    """The coordinator worker could not be reached; the message says where it looked."""
