"""The saga definitions a worker knows, by type and version."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from typing import Any

from coordinator._definition import Saga, Service
from coordinator._errors import DefinitionError, UnknownSagaError


class SagaRegistry:
    """Definitions by ``(name, version)``; the latest version starts new sagas."""

    def __init__(self, sagas: Iterable[Saga[Any]] = ()) -> None:
        self._sagas: dict[tuple[str, int], Saga[Any]] = {}
        for saga in sagas:
            self.register(saga)

    def register(self, saga: Saga[Any]) -> Saga[Any]:
        """Add a definition; re-registering the same object is a no-op."""
        if not isinstance(saga, Saga):
            raise DefinitionError(f"cannot register {saga!r}: it is not a coordinator.Saga")
        key = (saga.name, saga.version)
        existing = self._sagas.get(key)
        if existing is not None and existing is not saga:
            raise DefinitionError(
                f"{saga.label} is already registered with other steps; bump its version "
                "instead of changing a published definition"
            )
        self._sagas[key] = saga
        return saga

    def get(self, name: str, version: int | None = None) -> Saga[Any]:
        """The definition of ``name`` at ``version`` (the latest when None)."""
        if version is None:
            versions = [v for (n, v) in self._sagas if n == name]
            if versions:
                return self._sagas[(name, max(versions))]
        elif (name, version) in self._sagas:
            return self._sagas[(name, version)]
        known = ", ".join(f"{n} v{v}" for n, v in sorted(self._sagas)) or "none"
        wanted = f"saga type {name!r}" + (f" version {version}" if version else "")
        raise UnknownSagaError(
            f"{wanted} is not registered on this worker (registered: {known}); "
            "add its definition to SAGA_DEFINITIONS"
        )

    def __iter__(self) -> Iterator[Saga[Any]]:
        return iter(self._sagas.values())

    def __len__(self) -> int:
        return len(self._sagas)

    def services(self) -> dict[str, Service]:
        """Every participant of the registered sagas, by name (each declared once)."""
        found: dict[str, Service] = {}
        for saga in self:
            for step in saga.steps:
                prior = found.setdefault(step.service.name, step.service)
                if prior != step.service:
                    raise DefinitionError(
                        f"service {step.service.name!r} is declared twice with different "
                        "settings; declare each participant once and reuse it"
                    )
        return found


def load_definitions(specs: Iterable[str]) -> SagaRegistry:
    """Import ``module:attribute`` specs; each attribute is a Saga, a list, or a registry."""
    registry = SagaRegistry()
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        if not attr:
            raise DefinitionError(f"definition spec {spec!r}: write it as 'package.module:NAME'")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise DefinitionError(f"definition spec {spec!r} cannot be loaded: {exc}") from exc
        items = list(obj) if isinstance(obj, SagaRegistry | list | tuple) else [obj]
        for saga in items:
            registry.register(saga)
    return registry
