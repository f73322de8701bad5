"""A saga whose inline steps leave a trace outside Kafka, for tests that count effects.

``traced``: two inline steps; each appends ``<saga id> <step> <pid>`` to the file named by
``FENCE_EFFECTS`` (one ``write`` of one line, ``O_APPEND``: lines of several worker
processes never interleave). A step that runs twice for a saga leaves two lines. Started
with ``{"hold": true}``, its step ``a`` first waits while the file ``FENCE_GATE`` exists.
"""

from __future__ import annotations

import asyncio
import os

from pydantic import BaseModel

from coordinator import Saga, Service, Step, StepContext

#: the environment variable naming the effects file
EFFECTS = "FENCE_EFFECTS"


#: the environment variable naming the gate file: step ``a`` of a saga started with
#: ``hold`` waits while it exists (after appending ``<saga id>`` to ``<gate>.entered``)
GATE = "FENCE_GATE"


class Job(BaseModel):
    note: str = ""
    hold: bool = False


class Done(BaseModel):
    step: str


LOCAL = Service("traced-local", inline=True)


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


async def trace(ctx: StepContext[Job]) -> Done:
    gate = os.environ.get(GATE)
    if ctx.input.hold and ctx.step == "a" and gate:
        _append(f"{gate}.entered", f"{ctx.saga_id}\n")
        # a step in progress (a worker may be frozen in it); a stat is cheap enough here
        while os.path.exists(gate):  # noqa: ASYNC240
            await asyncio.sleep(0.05)
    _append(os.environ[EFFECTS], f"{ctx.saga_id} {ctx.step} {os.getpid()}\n")
    return Done(step=ctx.step)


async def undo(ctx: StepContext[Job]) -> None:
    return None


TRACED = Saga("traced", input=Job, steps=[
    Step("a", service=LOCAL, action=trace, compensation=undo),
    Step("b", service=LOCAL, action=trace, compensation=undo),
])  # fmt: skip

DEFINITIONS = "tests.integration.effect_sagas:TRACED"
