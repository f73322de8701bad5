"""Sagas mixing inline (local-activity) steps with queued ones, run by a real worker."""

from __future__ import annotations

from pydantic import BaseModel

from coordinator import BusinessFailure, Saga, Service, Step, StepContext


class Job(BaseModel):
    fail_at: str | None = None
    flaky_at: str | None = None


class Done(BaseModel):
    step: str
    attempt: int


INLINE = Service("inline-work", inline=True)
QUEUED = Service("queued-work")


async def work(ctx: StepContext[Job]) -> Done:
    if ctx.input.fail_at == ctx.step:
        raise BusinessFailure(f"{ctx.step} refused")
    if ctx.input.flaky_at == ctx.step and ctx.attempt == 1:
        raise ConnectionError(f"{ctx.step} flaked")
    return Done(step=ctx.step, attempt=ctx.attempt)


async def undo(ctx: StepContext[Job]) -> None:
    return None


MIXED = Saga("mixed", input=Job, steps=[
    Step("a", service=INLINE, action=work, compensation=undo),
    Step("b", service=INLINE, action=work, compensation=undo),
    Step("c", service=QUEUED, action=work, compensation=undo),
    Step("d", service=INLINE, action=work, compensation=undo),
])  # fmt: skip
