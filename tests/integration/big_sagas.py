"""A saga whose input and outputs can be made as large as a test needs (size limits)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from coordinator import RetryPolicy, Saga, Service, Step, StepContext


class Blob(BaseModel):
    data: str = ""
    #: bytes of output step ``a`` returns
    out_size: int = 0


class Out(BaseModel):
    data: str


WORK = Service("blob-work")
ONCE = RetryPolicy(maximum_attempts=1)


async def produce(ctx: StepContext[Blob]) -> Out:
    return Out(data="x" * ctx.input.out_size)


async def echo(ctx: StepContext[Blob]) -> Out:
    return Out(data="ok")


async def undo(ctx: StepContext[Blob]) -> None:
    return None


BLOB = Saga("blob", input=Blob, steps=[
    Step("a", service=WORK, action=produce, compensation=undo, retry=ONCE,
         timeout=timedelta(seconds=20)),
    Step("b", service=WORK, action=echo, compensation=undo, retry=ONCE,
         timeout=timedelta(seconds=20)),
])  # fmt: skip
