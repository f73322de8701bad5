"""saga-coordinator: sagas over Kafka with Faust.

Define a saga with :class:`Saga` and :class:`Step`, run workers with
``python -m coordinator worker``, start sagas with :class:`SagaClient`. Everything a saga
author needs is importable from here.
"""

from compensations import NO_RETRY, RetryPolicy
from coordinator.definition import Http, Saga, Service, Step, StepContext, http
from coordinator.errors import (
    BusinessFailure,
    BusinessHttpError,
    CoordinatorUnavailable,
    DefinitionError,
    OutputValidationError,
    SagaError,
    SagaNotFoundError,
    StepFailure,
    TransientHttpError,
    UnknownSagaError,
)
from coordinator.registry import SagaRegistry

__all__ = [
    "NO_RETRY",
    "BusinessFailure",
    "BusinessHttpError",
    "CoordinatorUnavailable",
    "DefinitionError",
    "Http",
    "OutputValidationError",
    "RetryPolicy",
    "Saga",
    "SagaError",
    "SagaNotFoundError",
    "SagaRegistry",
    "Service",
    "Step",
    "StepContext",
    "StepFailure",
    "TransientHttpError",
    "UnknownSagaError",
    "http",
]
