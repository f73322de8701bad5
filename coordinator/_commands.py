"""Building the commands a client sends, checked before anything is sent.

Saga ids are never random: a start names its id, or gives a business key from which the
id is derived (:func:`derive_saga_id`), so a retried start finds the saga it started.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from coordinator._definition import Saga
from coordinator._errors import CommandError
from coordinator._messages import ResolveStep, StartSaga

__all__ = ["Resolution", "derive_saga_id", "resolve_message", "start_message"]

#: an operator's verdict on a parked step (see :meth:`coordinator.SagaClient.resolve`)
Resolution = Literal["applied", "not_applied", "retry"]


def derive_saga_id(saga_type: str, business_key: str) -> str:
    """The saga id used when only a business key is given: ``"{saga_type}:{business_key}"``.

    Deterministic, so starting the same saga type for the same business key twice finds
    the first saga instead of running a second one.
    """
    return f"{saga_type}:{business_key}"


def start_message(
    saga: Saga[Any] | str,
    input: BaseModel | dict[str, Any],
    *,
    saga_id: str | None = None,
    business_key: str | None = None,
    version: int | None = None,
) -> StartSaga:
    """The start command :meth:`SagaClient.start` sends; raises :class:`CommandError`."""
    saga_type = saga if isinstance(saga, str) else saga.name
    if saga_id is None:
        if business_key is None:
            raise CommandError(
                f"start {saga_type!r}: pass saga_id= or business_key= (the id is then "
                f"{derive_saga_id(saga_type, '<business_key>')!r}); ids are never random, "
                "so a retried start cannot run the saga twice"
            )
        saga_id = derive_saga_id(saga_type, business_key)
    data = input.model_dump(mode="json") if isinstance(input, BaseModel) else input
    if not isinstance(data, dict):
        raise CommandError(
            f"start {saga_type!r}: the input must be a JSON object (a dict or a pydantic "
            f"model), not {type(data).__name__}"
        )
    try:
        return StartSaga(
            saga_id=saga_id,
            at=datetime.now(UTC),
            saga_type=saga_type,
            saga_version=version,
            input=data,
            business_key=business_key,
        )
    except ValidationError as exc:
        raise CommandError(f"start {saga_type!r}: {_first_error(exc)}") from exc


def resolve_message(
    saga_id: str,
    step: str,
    resolution: Resolution,
    output: BaseModel | dict[str, Any] | None = None,
) -> ResolveStep:
    """The resolve command :meth:`SagaClient.resolve` sends; raises :class:`CommandError`."""
    data = output.model_dump(mode="json") if isinstance(output, BaseModel) else output
    try:
        return ResolveStep(
            saga_id=saga_id, at=datetime.now(UTC), step=step, resolution=resolution, output=data
        )
    except ValidationError as exc:
        raise CommandError(f"resolve {saga_id!r}: {_first_error(exc)}") from exc


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}"
