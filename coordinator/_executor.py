"""Running one step request: a Python callable or an HTTP call, turned into a StepResult.

The executor never raises: every outcome, including a bug in the action, becomes a
``StepResult`` so the coordinator decides what follows. Each error says whether another
attempt may help (``retryable``) and whether the effect may have happened (``uncertain``):
a timeout, a 5xx, a lost connection or an unexpected exception is uncertain; a business
failure, a 4xx, a refused connection or an expired request is definite.

Deadlines are honoured: a request whose deadline has passed is not run (a definite
``Expired`` failure), and an attempt's time budget is ``deadline - now``, capped by the
step's timeout. Two callers know more than a step-topic executor does:

* an in-process step task (``coordinator._onehop``) is the only sender its attempt ever
  has, so its expiry is a provable ``NotSent`` (``messages.NOT_SENT``);
* an inline step runs inside the transition that dispatched it: no queue stands between
  the two, so it always runs, with the step's whole timeout (an expiry there could only
  come from a stalled event loop, and a recomputed chain may have run it before).
"""

from __future__ import annotations

import asyncio
import string
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from coordinator._definition import Http, Remote, Saga, Step, StepContext
from coordinator._errors import OutputValidationError, SagaError, StepFailure, UnknownSagaError
from coordinator._http import send_json
from coordinator._http1 import StepHttpClient
from coordinator._messages import NOT_SENT, StepRequest, StepResult
from coordinator._registry import SagaRegistry
from coordinator._transport import HttpClient, HttpxClient
from coordinator.events import ErrorInfo


def utcnow() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


def error_info(exc: BaseException, step: Step | None = None) -> ErrorInfo:
    """Classify an exception: retryable or not, definite or uncertain.

    A ``StepFailure`` states both; any other exception is a retryable, *uncertain* failure
    (an action that raised half-way may have acted before it did).
    """
    if isinstance(exc, StepFailure):
        kind, retryable, uncertain = exc.type, exc.retryable, exc.uncertain
    else:
        kind, retryable, uncertain = type(exc).__name__, True, True
    if step is not None and kind in step.retry.non_retryable_names:
        retryable = False
    message = str(exc) or kind
    return ErrorInfo(type=kind, message=message[:1000], retryable=retryable, uncertain=uncertain)


class StepExecutor:
    """Executes step requests for the sagas in ``registry``.

    Args:
        registry: the saga definitions.
        service_urls: per-service base URLs overriding ``Service.url``.
        client: the client of HTTP steps: an ``httpx.AsyncClient`` (tests' mock transports)
            or an ``HttpClient``; when omitted, a ``StepHttpClient`` is created on first use.
        clock: time source for result timestamps (tests pass a virtual clock).
    """

    def __init__(
        self,
        registry: SagaRegistry,
        *,
        service_urls: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | HttpClient | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.registry = registry
        self.service_urls = dict(service_urls or {})
        self._client = HttpxClient(client) if isinstance(client, httpx.AsyncClient) else client
        self._own_client = client is None
        self.clock = clock

    @property
    def client(self) -> HttpClient:
        """The client of HTTP steps (created on first use)."""
        if self._client is None:
            self._client = StepHttpClient()
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client if this executor created it."""
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def execute(
        self, request: StepRequest, *, inline: bool = False, only_sender: bool = False
    ) -> StepResult:
        """Run one attempt; always returns a result, never raises.

        Args:
            request: the attempt.
            inline: it runs inside the transition that dispatched it: never expired,
                its budget is the step's timeout.
            only_sender: this call is the only one that can ever send this attempt, so
                a deadline passed before sending is a definite ``NotSent``.
        """
        step: Step | None = None
        if inline:
            budget = float("inf")  # capped by the step's timeout in _run
        elif (budget := (request.deadline - self.clock()).total_seconds()) <= 0:
            expired = ErrorInfo(
                type=NOT_SENT if only_sender else "Expired",
                message=f"not run: its deadline {request.deadline.isoformat()} had passed"
                + (" before this worker sent it" if only_sender else ""),
                retryable=True,
                uncertain=False,
            )
            return request.result(at=self.clock(), error=expired)
        try:
            saga = self.registry.get(request.saga_type, request.saga_version)
            step = saga.steps[saga.index(request.step)]
        except (UnknownSagaError, KeyError) as exc:
            # this worker lacks the definition: nothing ran; another attempt (on a worker
            # that has it, or after a deploy) may succeed
            missing = ErrorInfo(
                type="UnknownSagaError",
                message=f"this executor has no {request.saga_type!r} v{request.saga_version} "
                f"step {request.step!r}: {exc}; deploy the definition (SAGA_DEFINITIONS)",
                retryable=True,
                uncertain=False,
            )
            return request.result(at=self.clock(), error=missing)
        try:
            output = await self._run(saga, step, request, budget)
            return request.result(at=self.clock(), output=output)
        except Exception as exc:
            return request.result(at=self.clock(), error=error_info(exc, step))

    async def _run(
        self, saga: Saga[Any], step: Step, request: StepRequest, budget: float
    ) -> dict[str, Any] | None:
        fn = step.action if request.phase == "action" else step.compensation
        if fn is None:
            return None
        if isinstance(fn, Remote):
            raise StepFailure(
                f"step {step.name!r} runs in the remote participant {step.service.name!r}, "
                "not in this process (in tests: SagaTestKit.replace stands in for it)",
                retryable=False,
            )
        timeout = min(step.timeout.total_seconds(), budget)
        try:
            # an HTTP step reads the context only to build its request, before it sends
            ctx = self.context(saga, step, request, before_acting=isinstance(fn, Http))
            call = self._prepare(step, fn, ctx) if isinstance(fn, Http) else None
        except StepFailure:
            raise
        except Exception as exc:
            # nothing was sent: a definite failure that another attempt would repeat
            raise StepFailure(
                f"step {step.name!r} could not build its request: {type(exc).__name__}: {exc}",
                retryable=False,
                type=type(exc).__name__,
            ) from exc
        try:
            if call is not None:
                async with asyncio.timeout(timeout):
                    reply = await self._send(call, timeout, request.compensates)
            else:
                reply = await within(fn(ctx), timeout)  # type: ignore[operator]
        except TimeoutError as exc:
            raise StepFailure(
                f"attempt exceeded its time budget of {timeout:g}s",
                type="StepTimeout",
                uncertain=True,
            ) from exc
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this worker is stopping: not the step's outcome
            raise StepFailure(
                f"step {step.name!r} was cancelled inside the action: {exc!r}",
                type="Cancelled",
                uncertain=True,
            ) from exc
        return self._output(saga, step, request, reply)

    def context(
        self, saga: Saga[Any], step: Step, request: StepRequest, *, before_acting: bool = False
    ) -> StepContext[Any]:
        """What the action of ``request`` sees: typed input, earlier outputs, its key.

        ``before_acting``: the context is read only before anything is sent (an HTTP
        step's path and body), so a stored output that fails validation is a definite
        failure; an action reads it while it runs, perhaps after it acted: uncertain.
        """
        return StepContext(
            saga_id=request.saga_id,
            saga_type=request.saga_type,
            step=step.name,
            attempt=request.attempt,
            idempotency_key=request.idempotency_key,
            input=saga.input.model_validate(request.input),
            outputs=Outputs(request.outputs, saga.output_models(), uncertain=not before_acting),
        )

    def _output(
        self, saga: Saga[Any], step: Step, request: StepRequest, reply: Any
    ) -> dict[str, Any] | None:
        if request.phase == "compensation" or reply is None:
            return None
        model = saga.output_models()[step.name]
        try:
            if isinstance(reply, BaseModel):
                return reply.model_dump(mode="json")
            if model is not None:
                return model.model_validate(reply).model_dump(mode="json")
        except ValidationError as exc:
            raise OutputValidationError(
                f"{saga.label} step {step.name!r}: reply does not match {model}: {exc}"
            ) from exc
        if isinstance(reply, dict):
            return reply
        raise SagaError(
            f"{saga.label} step {step.name!r}: action returned {type(reply).__name__}; "
            "return a pydantic model (or None)"
        )

    def _prepare(self, step: Step, action: Http, ctx: StepContext[Any]) -> _HttpCall:
        """Everything an HTTP call needs, built before anything is sent."""
        base = self.service_urls.get(step.service.name) or step.service.url
        if not base:
            raise StepFailure(
                f"service {step.service.name!r} has no URL: set Service(url=...) or "
                "SAGA_SERVICE_URLS",
                retryable=False,
                type="ServiceUrlMissing",
            )
        url = base.rstrip("/") + render_path(action.path, ctx)
        body = action.body(ctx) if action.body is not None else None
        if isinstance(body, BaseModel):
            body = body.model_dump(mode="json")
        return _HttpCall(action, url, body, ctx.idempotency_key)

    async def _send(self, call: _HttpCall, budget: float, compensates: str | None) -> Any:
        return await send_json(
            self.client,
            call.action.method,
            call.url,
            body=call.body,
            idempotency_key=call.key,
            request_timeout=budget,
            transport_retry=call.action.transport_retry,
            compensates=compensates,
        )


class Outputs(Mapping[str, BaseModel | None]):
    """Earlier steps' outputs as their models, each validated when first read.

    A step reads few of them (often none), so validating all of them for every step
    cost a saga of n steps n²/2 validations. A step without an output model reads None.

    A stored output that no longer validates (a changed definition; a NaN that arrived
    and was stored as null) fails the attempt, not retryable. ``uncertain`` (the default)
    says it is read by a running action, which may have called a participant before it
    read it (compensated, or parked); False when it is read before anything is sent.
    """

    def __init__(
        self,
        data: Mapping[str, dict[str, Any] | None],
        models: Mapping[str, type[BaseModel] | None],
        *,
        uncertain: bool = True,
    ) -> None:
        self._data = data
        self._models = models
        self._uncertain = uncertain
        self._read: dict[str, BaseModel | None] = {}

    def __getitem__(self, name: str) -> BaseModel | None:
        if name in self._read:
            return self._read[name]
        data, model = self._data[name], self._models.get(name)
        try:
            value = model.model_validate(data) if model and data is not None else None
        except ValidationError as exc:  # stored outputs were validated when they arrived
            acted = " (read by the running action, which may have acted)"
            raise StepFailure(
                f"the stored output of step {name!r} does not match {model}: {exc}"
                + (acted if self._uncertain else ""),
                retryable=False,
                uncertain=self._uncertain,
                type=type(exc).__name__,
            ) from exc
        self._read[name] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


async def within(action: Awaitable[Any], timeout: float) -> Any:
    """Await ``action`` for at most ``timeout`` seconds (``TimeoutError`` past it).

    An action that finishes without suspending (an in-process step doing CPU work) runs
    without arming a timer: nothing could have interrupted it anyway. One that suspends
    goes on under ``asyncio.timeout_at`` from the instant it started.
    """
    if not isinstance(action, types.CoroutineType):
        async with asyncio.timeout(timeout):
            return await action
    started = asyncio.get_running_loop().time()
    try:
        yielded = action.send(None)
    except StopIteration as done:
        return done.value
    async with asyncio.timeout_at(started + timeout):
        return await _resume(action, yielded)


@types.coroutine
def _resume(action: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """Go on with ``action`` after its first suspension (what ``await`` does, PEP 380)."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            action.close()
            raise
        except BaseException as exc:  # a cancellation or timeout goes into the action
            try:
                yielded = action.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                yielded = action.send(sent)
            except StopIteration as done:
                return done.value


@dataclass(frozen=True)
class _HttpCall:
    action: Http
    url: str
    body: Any
    key: str


def render_path(template: str, ctx: StepContext[Any]) -> str:
    """Fill ``{field}`` from the input and ``{step.field}`` from earlier outputs."""
    parts: list[str] = []
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(literal)
        if name is None:
            continue
        if "." in name:
            source, _, attr = name.partition(".")
            value: Any = getattr(ctx.outputs.get(source), attr, None)
            if value is None:
                raise StepFailure(
                    f"URL {template!r}: {source!r} produced no {attr!r}",
                    retryable=False,
                    type="UrlTemplateError",
                )
        else:
            value = getattr(ctx.input, name)
        parts.append(quote(str(value), safe=""))
    return "".join(parts)
