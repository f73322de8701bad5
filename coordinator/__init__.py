"""saga-coordinator: sagas over Kafka with Faust.

Define a saga with :class:`Saga` and :class:`Step`, run workers with
``python -m coordinator worker``, start sagas with :class:`SagaClient`. Everything a saga
author needs is importable from here.
"""

from compensations import NO_RETRY, BusinessHttpError, RetryPolicy, TransientHttpError
from coordinator.definition import Http, Saga, Service, Step, StepContext, http
from coordinator.errors import (
    BusinessFailure,
    CoordinatorUnavailable,
    DefinitionError,
    SagaError,
    SagaNotFoundError,
    StepFailure,
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
