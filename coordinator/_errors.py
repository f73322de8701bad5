"""Exceptions of the ``coordinator`` package.

Tree::

    SagaError                      root of this package
    ├── DefinitionError            a saga definition is invalid (names saga, step and fix)
    ├── UnknownSagaError           no definition registered for a saga type/version
    ├── StepFailure                raised by a step action to fail the attempt
    │   ├── BusinessFailure        definite and non-retryable: compensation starts at once
    │   ├── OutputValidationError  a reply did not match the step's output model
    │   └── HttpCallError          an HTTP participant call failed
    │       ├── TransientHttpError connect error, timeout, 408, 429, 5xx: retrying may help
    │       └── BusinessHttpError  other 4xx: the participant said no; never retried
    ├── SagaNotFoundError          a query named a saga id the coordinator does not hold
    ├── CoordinatorUnavailable     the worker that owns the saga did not answer
    ├── CommandError               a client command is malformed; nothing was sent
    ├── SagaRejected               the coordinator refused a command (reason from its
    │                              dead letter): unknown saga type, invalid input, ...
    ├── SagaStatusError            the saga's status does not allow the command (cancel of
    │                              a completed saga, retry of a saga that is not failed)
    └── LifecycleRecordError       a lifecycle record is neither one event nor a batch of
                                   events (``coordinator.events.parse_events``)

Every step failure says two things (see ARCHITECTURE.md section 4, "outcome classes"):

* ``retryable``: whether another attempt may help;
* ``uncertain``: whether the participant's effect *may* have happened (a timeout, a 5xx, a
  connection lost after the request was sent). A step whose retries end on an uncertain
  outcome is *maybe applied* and is compensated (or parks the saga, by the step's choice).
  A definite failure (``uncertain=False``) means the participant says nothing happened.
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
        retryable: False for a business failure (card declined): no further attempt,
            compensation starts at once.
        uncertain: True when the effect may have happened anyway (the action gave up
            waiting for a participant, say); the step is then compensated even if no
            attempt succeeds. False (the default) states that nothing happened.
        type: the error type recorded in events; defaults to the class name.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        uncertain: bool = False,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.uncertain = uncertain
        self.type = type or self.__class__.__name__


class BusinessFailure(StepFailure):
    """A business refusal (declined, out of stock): definite, never retried."""

    def __init__(self, message: str, *, type: str | None = None) -> None:
        super().__init__(message, retryable=False, type=type)


class OutputValidationError(StepFailure):
    """A participant reported success with an output that does not match the step's model.

    Non-retryable. Uncertain: the participant said it applied the effect, so the step is
    compensated with its undo key; the malformed output is never stored, so it cannot
    poison later steps or compensations.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False, uncertain=True)


class HttpCallError(StepFailure):
    """An HTTP call to a participant failed."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        uncertain: bool,
        status: int | None = None,
        body: str = "",
    ) -> None:
        super().__init__(message, retryable=retryable, uncertain=uncertain)
        self.status = status
        self.body = body


class TransientHttpError(HttpCallError):
    """Connect error, timeout, 408, 429 or 5xx: the same request may succeed later.

    ``uncertain`` is False only when the request provably did not reach the participant's
    logic (connection refused, 408, 429); a timeout or a 5xx may hide an applied effect.
    """

    def __init__(
        self,
        message: str,
        *,
        uncertain: bool,
        status: int | None = None,
        body: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, retryable=True, uncertain=uncertain, status=status, body=body)
        self.retry_after = retry_after


class BusinessHttpError(HttpCallError):
    """A 4xx answer (other than 408/429): a definite business refusal, never retried."""

    def __init__(self, message: str, *, status: int | None = None, body: str = "") -> None:
        super().__init__(message, retryable=False, uncertain=False, status=status, body=body)


class SagaNotFoundError(SagaError, LookupError):
    """The coordinator holds no saga with this id."""


class CoordinatorUnavailable(SagaError):
    """The coordinator worker could not be reached; the message says where it looked."""


class CommandError(SagaError, ValueError):
    """A client command is malformed (no saga id, input not an object); nothing was sent."""


class SagaRejected(SagaError):
    """The coordinator refused a command; ``reason`` is what it wrote to the dead letter."""

    def __init__(self, saga_id: str, reason: str) -> None:
        super().__init__(f"saga {saga_id!r} was rejected: {reason}")
        self.saga_id = saga_id
        self.reason = reason


class SagaStatusError(SagaError):
    """The saga's status does not allow the command; ``status`` is the status it has."""

    def __init__(self, message: str, *, saga_id: str, status: str) -> None:
        super().__init__(message)
        self.saga_id = saga_id
        self.status = status


class LifecycleRecordError(SagaError, ValueError):
    """A lifecycle record is neither one event nor a batch of events; the message says why.

    Raised by :func:`coordinator.events.parse_events`: not JSON, neither an event nor a
    batch envelope, an envelope version newer than the reader, events out of ``seq``
    order or of another saga, or an invalid event (its position in the batch named; the
    ``pydantic.ValidationError`` is the ``__cause__``). A ``ValueError``.
    """
