"""saga-coordinator: sagas over Kafka with Faust.

Define a saga with :class:`Saga` and :class:`Step`, run workers with
``python -m coordinator worker`` (or :func:`create_app`), start and operate sagas with
:class:`SagaClient`. Everything a saga author or operator needs is importable from here;
the lifecycle-event contract is :mod:`coordinator.events`, the test kit
:mod:`coordinator.testing`.
"""

from typing import TYPE_CHECKING, Any

from compensations import NO_RETRY, RetryPolicy
from coordinator._client import SagaClient
from coordinator._commands import derive_saga_id
from coordinator._definition import Http, Remote, Saga, Service, Step, StepContext, http, remote
from coordinator._errors import (
    BusinessFailure,
    BusinessHttpError,
    CommandError,
    CoordinatorUnavailable,
    DefinitionError,
    OutputValidationError,
    SagaError,
    SagaNotFoundError,
    SagaRejected,
    SagaStatusError,
    StepFailure,
    TransientHttpError,
    UnknownSagaError,
)
from coordinator._queries import SagaView, StepView
from coordinator._registry import SagaRegistry
from coordinator._settings import CoordinatorSettings
from coordinator._state import SagaStatus

if TYPE_CHECKING:
    from coordinator._app import Coordinator, create_app

__all__ = [
    "NO_RETRY",
    "BusinessFailure",
    "BusinessHttpError",
    "CommandError",
    "Coordinator",
    "CoordinatorSettings",
    "CoordinatorUnavailable",
    "DefinitionError",
    "Http",
    "OutputValidationError",
    "Remote",
    "RetryPolicy",
    "Saga",
    "SagaClient",
    "SagaError",
    "SagaNotFoundError",
    "SagaRegistry",
    "SagaRejected",
    "SagaStatus",
    "SagaStatusError",
    "SagaView",
    "Service",
    "Step",
    "StepContext",
    "StepFailure",
    "StepView",
    "TransientHttpError",
    "UnknownSagaError",
    "create_app",
    "derive_saga_id",
    "http",
    "remote",
]


def __getattr__(name: str) -> Any:
    # the Faust app pulls in faust; import it on first use, not with every client or CLI
    if name in ("Coordinator", "create_app"):
        from coordinator import _app as app

        return getattr(app, name)
    raise AttributeError(f"module 'coordinator' has no attribute {name!r}")
