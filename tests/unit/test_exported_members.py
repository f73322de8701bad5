"""Each package's public surface is explicit and pinned (as httpx's test_exported_members).

Adding or removing a public name is an API change: update the pin on purpose.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

import compensations
import coordinator

PACKAGES = ["coordinator", "listeners", "compensations"]


def test_coordinator_exports_are_pinned() -> None:
    assert sorted(coordinator.__all__) == [
        "BusinessFailure",
        "BusinessHttpError",
        "CommandError",
        "Coordinator",
        "CoordinatorSettings",
        "CoordinatorUnavailable",
        "DefinitionError",
        "Http",
        "NO_RETRY",
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


def test_compensations_exports_are_pinned() -> None:
    assert sorted(compensations.__all__) == [
        "CompensationError",
        "DEFAULT_COMPENSATION_RETRY",
        "DEFAULT_RETRY",
        "Escalate",
        "NO_RETRY",
        "PolicyError",
        "RetryLater",
        "RetryPolicy",
        "Unwind",
        "on_compensation_failure",
    ]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_resolves(name: str) -> None:
    package = importlib.import_module(name)
    assert len(set(package.__all__)) == len(package.__all__), "duplicates in __all__"
    for member in package.__all__:
        assert getattr(package, member) is not None, member


@pytest.mark.parametrize("name", PACKAGES)
def test_nothing_public_outside_all(name: str) -> None:
    """A public name that is not in ``__all__`` is an accident (a leaked import)."""
    package = importlib.import_module(name)
    leaked = {
        member
        for member, value in vars(package).items()
        if not member.startswith("_")
        and not isinstance(value, ModuleType)  # submodules, imported for their side effect
        and member not in {"annotations", "TYPE_CHECKING", "Any"}
        and member not in package.__all__
    }
    assert leaked == set()
