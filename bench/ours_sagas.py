"""The benchmark scenarios as saga-coordinator definitions (public API only)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from bench import scenarios
from coordinator import BusinessFailure, Saga, Service, Step, StepContext, http


class BenchInput(BaseModel):
    scenario: str
    fail_at: int | None = None
    payload: dict[str, Any] = {}


class StepOut(BaseModel):
    step: int
    ref: str | None = None


#: in-process steps as local activities (run inside the inbox agent), or through the
#: step topic and an executor agent like any other service
LOCAL_INLINE = Service("bench-local", inline=True)
LOCAL_QUEUED = Service("bench-local")


def _local_action(n: int) -> Any:
    async def action(ctx: StepContext[BenchInput]) -> StepOut:
        try:
            return StepOut.model_validate(scenarios.local_step(ctx.saga_id, n, ctx.input.fail_at))
        except scenarios.BusinessFailure as exc:
            raise BusinessFailure(f"step {n} declined") from exc

    return action


def _local_compensation(n: int) -> Any:
    async def compensation(ctx: StepContext[BenchInput]) -> None:
        scenarios.local_compensation(ctx.saga_id, n)

    return compensation


def _local_saga(name: str, steps: int, service: Service) -> Saga[BenchInput]:
    return Saga(name, input=BenchInput, steps=[
        Step(f"s{n}", service=service, action=_local_action(n),
             compensation=_local_compensation(n))
        for n in range(1, steps + 1)
    ])  # fmt: skip


def _body(ctx: StepContext[BenchInput]) -> dict[str, Any]:
    return {"saga_id": ctx.saga_id, "fail_at": ctx.input.fail_at}


MEDIUM_SERVICES = [Service(f"svc{n}") for n in range(1, 6)]

MEDIUM = Saga("bench_medium", input=BenchInput, steps=[
    Step(f"s{n}", service=svc, action=http("POST", "/step", body=_body),
         compensation=http("POST", "/compensate", body=_body))
    for n, svc in enumerate(MEDIUM_SERVICES, start=1)
])  # fmt: skip

ALL_SAGAS = [
    _local_saga("bench_simple", 3, LOCAL_INLINE),
    MEDIUM,
    _local_saga("bench_complex", 10, LOCAL_INLINE),
]
ALL_SAGAS_QUEUED = [
    _local_saga("bench_simple", 3, LOCAL_QUEUED),
    MEDIUM,
    _local_saga("bench_complex", 10, LOCAL_QUEUED),
]
