"""Running one step request: a Python callable or an HTTP call, turned into a StepResult.

The executor never raises: every outcome, including a bug in the action, becomes a
``StepResult`` (an error marked retryable or not) so the coordinator decides what follows.
"""

from __future__ import annotations

import asyncio
import string
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from compensations import send_json
from compensations.transport import AiohttpTransport
from coordinator.definition import Http, Saga, Step, StepContext
from coordinator.errors import SagaError, StepFailure, UnknownSagaError
from coordinator.events import ErrorInfo
from coordinator.messages import StepRequest, StepResult
from coordinator.registry import SagaRegistry


def utcnow() -> datetime:
    return datetime.now(UTC)


def error_info(exc: BaseException, step: Step | None = None) -> ErrorInfo:
    """Classify an exception: business failures (non-retryable) versus transient ones."""
    kind = exc.type if isinstance(exc, StepFailure) else type(exc).__name__
    retryable = not getattr(exc, "non_retryable", False)
    if step is not None and kind in step.retry.non_retryable_names:
        retryable = False
    message = str(exc) or kind
    return ErrorInfo(type=kind, message=message[:1000], retryable=retryable)


class StepExecutor:
    """Executes step requests for the sagas in ``registry``.

    Args:
        registry: the saga definitions.
        service_urls: per-service base URLs overriding ``Service.url``.
        client: the httpx client for HTTP steps (one is created when omitted).
        clock: time source for result timestamps (tests pass a virtual clock).
    """

    def __init__(
        self,
        registry: SagaRegistry,
        *,
        service_urls: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.registry = registry
        self.service_urls = dict(service_urls or {})
        self._client = client
        self._own_client = client is None
        self.clock = clock

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(transport=AiohttpTransport())
        return self._client

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def execute(self, request: StepRequest) -> StepResult:
        """Run one attempt; always returns a result, never raises."""
        step: Step | None = None
        try:
            saga = self.registry.get(request.saga_type, request.saga_version)
            step = saga.steps[saga.index(request.step)]
            output = await self._run(saga, step, request)
            return request.result(at=self.clock(), output=output)
        except (UnknownSagaError, KeyError) as exc:
            error = ErrorInfo(type=type(exc).__name__, message=str(exc), retryable=False)
            return request.result(at=self.clock(), error=error)
        except Exception as exc:
            return request.result(at=self.clock(), error=error_info(exc, step))

    async def _run(
        self, saga: Saga[Any], step: Step, request: StepRequest
    ) -> dict[str, Any] | None:
        fn = step.action if request.phase == "action" else step.compensation
        if fn is None:
            return None
        ctx = self.context(saga, step, request)
        timeout = step.timeout.total_seconds()
        try:
            async with asyncio.timeout(timeout):
                if isinstance(fn, Http):
                    reply = await self._http(step, fn, ctx, timeout)
                else:
                    reply = await fn(ctx)
        except TimeoutError as exc:
            raise StepFailure(
                f"attempt exceeded the step timeout of {timeout:g}s", type="StepTimeout"
            ) from exc
        return self._output(saga, step, request, reply)

    def context(self, saga: Saga[Any], step: Step, request: StepRequest) -> StepContext[Any]:
        models = saga.output_models()
        outputs: dict[str, BaseModel | None] = {}
        for name, data in request.outputs.items():
            model = models.get(name)
            outputs[name] = model.model_validate(data) if model and data is not None else None
        return StepContext(
            saga_id=request.saga_id,
            saga_type=request.saga_type,
            step=step.name,
            attempt=request.attempt,
            idempotency_key=request.idempotency_key,
            input=saga.input.model_validate(request.input),
            outputs=outputs,
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
            raise StepFailure(
                f"{saga.label} step {step.name!r}: reply does not match {model}: {exc}",
                non_retryable=True,
                type="OutputValidationError",
            ) from exc
        if isinstance(reply, dict):
            return reply
        raise SagaError(
            f"{saga.label} step {step.name!r}: action returned {type(reply).__name__}; "
            "return a pydantic model (or None)"
        )

    async def _http(self, step: Step, action: Http, ctx: StepContext[Any], budget: float) -> Any:
        base = self.service_urls.get(step.service.name) or step.service.url
        if not base:
            raise StepFailure(
                f"service {step.service.name!r} has no URL: set Service(url=...) or "
                "SAGA_SERVICE_URLS",
                non_retryable=True,
                type="ServiceUrlMissing",
            )
        url = base.rstrip("/") + render_path(action.path, ctx)
        body = action.body(ctx) if action.body is not None else None
        if isinstance(body, BaseModel):
            body = body.model_dump(mode="json")
        return await send_json(
            self.client,
            action.method,
            url,
            body=body,
            idempotency_key=ctx.idempotency_key,
            request_timeout=budget,
            transport_retry=action.transport_retry,
        )


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
                    non_retryable=True,
                    type="UrlTemplateError",
                )
        else:
            value = getattr(ctx.input, name)
        parts.append(quote(str(value), safe=""))
    return "".join(parts)
