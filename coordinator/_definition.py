"""Saga definitions: a name, a version, an input model and an ordered list of steps.

A definition reads like a recipe — each step with its service and compensation beside it::

    ORDER = Saga("order", version=1, input=Order, steps=[
        Step("create_order", service=ORDERS, action=create, compensation=cancel),
        Step("charge_payment", service=PAYMENTS, action=http("POST", "/charges", body=charge),
             compensation=http("POST", "/charges/undo"),  # by key: Saga-Compensates
             retry=RetryPolicy(maximum_attempts=3, non_retryable_errors=(CardDeclined,))),
    ])

Everything is validated when the saga is built, with errors that name the saga, the step
and the fix.
"""

from __future__ import annotations

import inspect
import re
import string
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from compensations import DEFAULT_COMPENSATION_RETRY, DEFAULT_RETRY, RetryPolicy
from coordinator._errors import DefinitionError
from coordinator._http import TRANSPORT_RETRY

InputT = TypeVar("InputT", bound=BaseModel)
M = TypeVar("M", bound=BaseModel)

_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,62}$")


@dataclass(frozen=True)
class Service:
    """A participant: where its step requests go and, for HTTP steps, its base URL.

    Args:
        name: the service name; its step requests go to topic ``{prefix}.step.{name}``.
        url: base URL for HTTP actions (``SAGA_SERVICE_URLS`` overrides it per worker).
        remote: True when the service consumes its step topic itself (any language) and
            replies to the inbox; the coordinator then runs no executor for it.
        inline: True to run this service's actions inside the coordinator's inbox agent,
            as *local activities*: no step-topic hop and no result-topic hop. Each
            transition is still recorded in the table before its effects are sent, and a
            crash re-runs the step with the same idempotency key. For fast in-process
            actions only: an inline action holds its partition while it runs.
    """

    name: str
    url: str | None = None
    remote: bool = False
    inline: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise DefinitionError(
                f"service {self.name!r}: use lowercase letters, digits, '_' or '-' "
                "(it becomes part of a Kafka topic name)"
            )
        if self.remote and self.inline:
            raise DefinitionError(
                f"service {self.name!r}: remote=True and inline=True exclude each other; "
                "a remote service runs elsewhere, an inline one inside the coordinator"
            )


class StepContext(Generic[InputT]):
    """What a step action sees: the saga input, earlier outputs, and its idempotency key."""

    def __init__(
        self,
        *,
        saga_id: str,
        saga_type: str,
        step: str,
        attempt: int,
        idempotency_key: str,
        input: InputT,
        outputs: Mapping[str, BaseModel | None],
    ) -> None:
        self.saga_id = saga_id
        self.saga_type = saga_type
        self.step = step
        self.attempt = attempt
        self.idempotency_key = idempotency_key
        self.input = input
        self.outputs = outputs

    def output(self, step: str, model: type[M]) -> M:
        """The typed output of an earlier step; raises if it has none of that type."""
        value = self.outputs.get(step)
        if not isinstance(value, model):
            raise DefinitionError(
                f"step {self.step!r} asked for the output of {step!r} as {model.__name__}, "
                f"but it is {type(value).__name__}: declare output={model.__name__} on {step!r}"
            )
        return value


Action = Callable[[StepContext[Any]], Awaitable[BaseModel | None]]
BodyBuilder = Callable[[StepContext[Any]], BaseModel | Mapping[str, Any] | None]


@dataclass(frozen=True, kw_only=True)
class Http:
    """A step action (or compensation) that is one HTTP call to the step's service.

    ``path`` is appended to the service URL; ``{field}`` is replaced by a saga input field
    and ``{step.field}`` by a field of an earlier step's output. The request carries the
    ``Idempotency-Key`` header; transient errors are retried in process with tenacity
    (``transport_retry``), a 4xx answer is a non-retryable business failure.
    """

    method: str
    path: str
    body: BodyBuilder | None = None
    output: type[BaseModel] | None = None
    transport_retry: RetryPolicy = TRANSPORT_RETRY

    def placeholders(self) -> list[str]:
        """The ``{field}`` names in the path template."""
        return [f for _, f, _, _ in string.Formatter().parse(self.path) if f is not None]


def http(
    method: str,
    path: str,
    *,
    body: BodyBuilder | None = None,
    output: type[BaseModel] | None = None,
    transport_retry: RetryPolicy = TRANSPORT_RETRY,
) -> Http:
    """Build an HTTP step action or compensation (see :class:`Http`)."""
    return Http(
        method=method.upper(), path=path, body=body, output=output, transport_retry=transport_retry
    )


@dataclass(frozen=True, kw_only=True)
class Remote:
    """A step action (or compensation) that a remote participant runs, in any language.

    The participant consumes the service's step topic and replies to the inbox (README,
    "Remote participants"); the coordinator only sends the requests and records the
    results. ``output`` is the model a successful reply's output is validated against.
    """

    output: type[BaseModel] | None = None


def remote(*, output: type[BaseModel] | None = None) -> Remote:
    """Declare the action or compensation of a ``Service(..., remote=True)`` step."""
    return Remote(output=output)


@dataclass(frozen=True)
class Step:
    """One step: its action, the service it belongs to, and its compensation.

    Args:
        name: unique within the saga.
        service: the participant that runs it.
        action: ``async def action(ctx) -> OutputModel | None``, :func:`http`, or
            :func:`remote` for a step of a remote service.
        compensation: undoes the action; None when there is nothing to undo.
        output: the action's output model (inferred from the return annotation,
            ``http(output=...)`` or ``remote(output=...)`` when omitted).
        retry: durable retry policy of the action.
        compensation_retry: durable retry policy of the compensation.
        timeout: how long one attempt may take before it counts as failed and is retried
            (with the same idempotency key). A timed-out attempt is an *uncertain*
            outcome: the participant may still apply it.
        on_uncertain: what happens when the action's retries end and some attempt's
            outcome was uncertain (the effect may have happened): ``"compensate"`` (the
            default) runs this step's compensation first in the unwind, with its undo
            key; ``"park"`` rests the saga in status ``parked`` until an operator says
            whether the effect happened (``python -m coordinator resolve``).
    """

    name: str
    service: Service = field(kw_only=True)
    action: Action | Http | Remote = field(kw_only=True)
    compensation: Action | Http | Remote | None = field(default=None, kw_only=True)
    output: type[BaseModel] | None = field(default=None, kw_only=True)
    retry: RetryPolicy = field(default=DEFAULT_RETRY, kw_only=True)
    compensation_retry: RetryPolicy = field(default=DEFAULT_COMPENSATION_RETRY, kw_only=True)
    timeout: timedelta = field(default=timedelta(seconds=10), kw_only=True)
    on_uncertain: Literal["compensate", "park"] = field(default="compensate", kw_only=True)

    def output_model(self) -> type[BaseModel] | None:
        """The action's output model: ``output=``, http()'s, or the return annotation."""
        if self.output is not None:
            return self.output
        if isinstance(self.action, Http | Remote):
            return self.action.output
        try:
            hint = typing.get_type_hints(self.action).get("return")
        except Exception:  # unresolvable annotations: the user must pass output=
            return None
        return hint if inspect.isclass(hint) and issubclass(hint, BaseModel) else None


class Saga(Generic[InputT]):
    """A validated saga definition.

    Args:
        name: the saga type, e.g. ``"order_fulfillment"``.
        version: in-flight sagas finish on the version they started with.
        input: the pydantic model of the saga input.
        steps: the steps in execution order.
    """

    def __init__(
        self, name: str, *, version: int = 1, input: type[InputT], steps: Sequence[Step]
    ) -> None:
        self.name = name
        self.version = version
        self.input = input
        self.steps: tuple[Step, ...] = tuple(steps)
        self._index = {s.name: i for i, s in enumerate(self.steps)}
        _validate(self)
        # resolved once: get_type_hints per executed step cost ~9% of a worker's CPU
        self._outputs = {s.name: s.output_model() for s in self.steps}

    def __repr__(self) -> str:
        return f"<Saga {self.name!r} v{self.version}: {[s.name for s in self.steps]}>"

    @property
    def label(self) -> str:
        """``saga 'name' vN``, for messages."""
        return f"saga {self.name!r} v{self.version}"

    def index(self, step: str) -> int:
        """The position of ``step`` in the saga."""
        return self._index[step]

    def output_models(self) -> Mapping[str, type[BaseModel] | None]:
        """Each step's output model (None: it has none), resolved once."""
        return self._outputs


def _validate(saga: Saga[Any]) -> None:
    where = saga.label
    if not _NAME.match(saga.name):
        raise DefinitionError(f"{where}: name must match {_NAME.pattern}")
    if saga.version < 1:
        raise DefinitionError(f"{where}: version must be >= 1")
    if not (inspect.isclass(saga.input) and issubclass(saga.input, BaseModel)):
        raise DefinitionError(f"{where}: input must be a pydantic BaseModel subclass")
    if not saga.steps:
        raise DefinitionError(f"{where}: a saga needs at least one step")
    seen: set[str] = set()
    for i, step in enumerate(saga.steps):
        at = f"{where} step {step.name!r}"
        if not isinstance(step, Step):
            raise DefinitionError(f"{where}: steps[{i}] is {type(step).__name__}, not a Step")
        if not _NAME.match(step.name):
            raise DefinitionError(f"{at}: step names must match {_NAME.pattern}")
        if step.name in seen:
            raise DefinitionError(f"{at}: duplicate step name; give each step a unique name")
        seen.add(step.name)
        if step.timeout <= timedelta(0):
            raise DefinitionError(f"{at}: timeout must be positive")
        if step.on_uncertain not in ("compensate", "park"):
            raise DefinitionError(
                f"{at}: on_uncertain={step.on_uncertain!r}; use 'compensate' or 'park'"
            )
        _check_remote(at, step)
        _check_callable(at, "action", step.action)
        if step.compensation is not None:
            _check_callable(at, "compensation", step.compensation)
        earlier = saga.steps[:i]
        if isinstance(step.action, Http):
            _check_template(saga, at, step.action, available=earlier)
        if isinstance(step.compensation, Http):
            _check_template(saga, at, step.compensation, available=earlier)


def _check_remote(at: str, step: Step) -> None:
    service = step.service.name
    for role, fn in (("action", step.action), ("compensation", step.compensation)):
        if step.service.remote and fn is not None and not isinstance(fn, Remote):
            raise DefinitionError(
                f"{at}: service {service!r} is remote, so its participant runs the {role}; "
                f"pass {role}=remote() (with output= on the action), not a function"
            )
        if not step.service.remote and isinstance(fn, Remote):
            raise DefinitionError(
                f"{at}: {role}=remote() needs Service({service!r}, remote=True), whose "
                "participant consumes its step topic; or pass an async function or http()"
            )


def _check_callable(at: str, role: str, fn: object) -> None:
    if isinstance(fn, Http | Remote):
        return
    if not callable(fn):
        raise DefinitionError(
            f"{at}: {role} {fn!r} is not callable; pass an async function or coordinator.http()"
        )
    if not inspect.iscoroutinefunction(fn):
        name = getattr(fn, "__name__", repr(fn))
        raise DefinitionError(f"{at}: {role} {name!r} must be an `async def` function")


def _check_template(saga: Saga[Any], at: str, action: Http, available: Sequence[Step]) -> None:
    try:
        fields = action.placeholders()
    except ValueError as exc:
        raise DefinitionError(f"{at}: bad URL template {action.path!r}: {exc}") from exc
    if action.path and not action.path.startswith("/"):
        raise DefinitionError(f"{at}: URL template {action.path!r} must start with '/'")
    outputs = {s.name: s.output_model() for s in available}
    for name in fields:
        if not name:
            raise DefinitionError(
                f"{at}: URL template {action.path!r} has an empty '{{}}'; name a field"
            )
        if "." in name:
            step, _, attr = name.partition(".")
            if step not in outputs:
                if at.endswith(f"step {step!r}"):
                    raise DefinitionError(
                        f"{at}: compensation URL {action.path!r} uses {{{name}}}, the step's "
                        "own output, which a step whose outcome was uncertain never has; "
                        "undo by the action's key instead (header Saga-Compensates), e.g. "
                        "http('POST', '/charges/undo')"
                    )
                raise DefinitionError(
                    f"{at}: URL template {action.path!r} uses {{{name}}} but {step!r} is not "
                    f"an earlier step; use one of {sorted(outputs)}"
                )
            model = outputs[step]
            if model is not None and attr not in model.model_fields:
                raise DefinitionError(
                    f"{at}: URL template {action.path!r}: {model.__name__} (output of {step!r}) "
                    f"has no field {attr!r}"
                )
        elif name not in saga.input.model_fields:
            raise DefinitionError(
                f"{at}: URL template {action.path!r} uses {{{name}}}, which is not a field of "
                f"{saga.input.__name__}; use an input field or {{step.field}}"
            )
