"""The bench's three scenarios as one Restate service, in Python (``restate-sdk``).

Written the way Restate's saga guide writes a saga: a plain handler that runs each step
as a durable side effect (``ctx.run_typed``), keeps a list of undo actions, and on a
``TerminalError`` runs them in reverse, each one a ``ctx.run_typed`` too. One difference
from the guide: an undo action is registered *after* its step succeeded, because the
bench's rule is that a step failing with a business error did nothing (failure at step k
compensates k-1..1, the same rule every engine here is checked against). The handler
returns the outcome (status and compensation order) instead of re-raising, so the driver
reads it from the ingress response.

Served by Hypercorn over HTTP/2 cleartext (what Restate's server speaks to a deployment):

    python -m hypercorn 'bench.restate_service:create_app()' --bind 127.0.0.1:PORT -w 2

The base URL of the medium scenario's HTTP services comes from ``BENCH_HTTP_BASE``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import aiohttp
import restate
from restate.exceptions import TerminalError

from bench import scenarios as sc

SERVICE = "SagaBench"
HANDLER = "run"

# Same retry budget as the DBOS adapter's HTTP steps: 3 attempts, 100 ms apart at first.
_HTTP_RETRY: restate.RunOptions[dict[str, Any]] = restate.RunOptions(
    max_attempts=3, initial_retry_interval=timedelta(milliseconds=100)
)


class _Http:
    """One aiohttp session per worker process, created lazily on its event loop."""

    def __init__(self, base: str, connections: int = 100) -> None:
        self.base, self.connections = base, connections
        self._session: aiohttp.ClientSession | None = None

    async def post(self, path: str, body: dict[str, Any], key: str) -> tuple[int, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                base_url=self.base,
                connector=aiohttp.TCPConnector(limit=self.connections),
                timeout=aiohttp.ClientTimeout(total=30),
            )
        async with self._session.post(path, json=body, headers={"Idempotency-Key": key}) as r:
            return r.status, await r.json()


def create_app() -> Any:
    """The ASGI app hosting the ``SagaBench`` service (a factory: no work at import)."""
    http = _Http(os.environ.get("BENCH_HTTP_BASE", "http://127.0.0.1:1"))
    service = restate.Service(SERVICE)

    def local_step(saga_id: str, step: int, fail_at: int | None) -> dict[str, Any]:
        try:
            return sc.local_step(saga_id, step, fail_at)
        except sc.BusinessFailure as exc:
            raise TerminalError(str(exc), status_code=409) from exc

    async def http_step(saga_id: str, step: int, body: dict[str, Any]) -> dict[str, Any]:
        status, result = await http.post(
            sc.http_step_path(step), body, sc.idempotency_key(saga_id, step)
        )
        if status == sc.HTTP_BUSINESS_FAILURE:
            raise TerminalError(str(sc.BusinessFailure(step)), status_code=409)
        if status != 200:
            raise RuntimeError(f"step {step}: HTTP {status}")  # retried by Restate
        return dict(result)

    async def http_compensation(saga_id: str, step: int) -> dict[str, Any]:
        body = {"saga_id": saga_id, "step": step}
        key = sc.idempotency_key(saga_id, step, compensation=True)
        status, result = await http.post(sc.http_compensation_path(step), body, key)
        if status != 200:
            raise RuntimeError(f"compensation {step}: HTTP {status}")
        return dict(result)

    @service.handler(HANDLER)
    async def run(ctx: restate.Context, request: dict[str, Any]) -> dict[str, Any]:
        saga_id = str(request["saga_id"])
        saga_input = sc.SagaInput.from_json(request["input"])
        scenario = sc.SCENARIOS[saga_input.scenario]
        undo: list[tuple[int, Any]] = []
        try:
            for n in range(1, scenario.steps + 1):
                if scenario.kind == "http":
                    body = sc.http_step_body(saga_id, n, saga_input)
                    await ctx.run_typed(f"step {n}", http_step, _HTTP_RETRY, saga_id, n, body)
                    undo.append(
                        (
                            n,
                            lambda n=n: ctx.run_typed(
                                f"undo {n}", http_compensation, _HTTP_RETRY, saga_id, n
                            ),
                        )
                    )
                else:
                    await ctx.run_typed(
                        f"step {n}",
                        local_step,
                        restate.RunOptions(),
                        saga_id,
                        n,
                        saga_input.fail_at,
                    )
                    undo.append(
                        (
                            n,
                            lambda n=n: ctx.run_typed(
                                f"undo {n}", sc.local_compensation, restate.RunOptions(), saga_id, n
                            ),
                        )
                    )
        except TerminalError:
            compensated: list[int] = []
            for n, action in reversed(undo):
                await action()
                compensated.append(n)
            return {"status": sc.COMPENSATED, "compensated": compensated}
        return {"status": sc.COMPLETED, "compensated": []}

    return restate.app(services=[service])
