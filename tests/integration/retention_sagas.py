"""Sagas for the retention and table-store tests, run by real worker processes.

* ``quick``: two inline steps; finishes inside the batch of its start.
* ``gated``: an inline step, then a step of the remote service ``gate`` that the test
  answers itself (or not: its attempt times out and is retried on a durable deadline).
* ``broken``: its second step fails for good and the first step's compensation always
  raises: the saga ends ``compensation_failed`` quickly.
* ``stuck``: its second step's only attempt is uncertain and the step parks the saga for
  an operator (``parked``).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from compensations import RetryPolicy
from coordinator import BusinessFailure, Saga, Service, Step, StepContext, StepFailure, remote


class Job(BaseModel):
    note: str = ""


class Done(BaseModel):
    step: str


LOCAL = Service("store-local", inline=True)
GATE = Service("gate", remote=True)


async def work(ctx: StepContext[Job]) -> Done:
    return Done(step=ctx.step)


async def refuse(ctx: StepContext[Job]) -> Done:
    raise BusinessFailure(f"{ctx.step} refused")


async def lose_reply(ctx: StepContext[Job]) -> Done:
    raise StepFailure(f"{ctx.step}: the participant never answered", uncertain=True)


async def undo(ctx: StepContext[Job]) -> None:
    return None


async def undo_fails(ctx: StepContext[Job]) -> None:
    raise RuntimeError(f"undo of {ctx.step} failed")


QUICK = Saga("quick", input=Job, steps=[
    Step("a", service=LOCAL, action=work, compensation=undo),
    Step("b", service=LOCAL, action=work, compensation=undo),
])  # fmt: skip

#: a gate attempt not answered within GATE_TIMEOUT is retried (durable deadline)
GATE_TIMEOUT = timedelta(seconds=4)

GATED = Saga("gated", input=Job, steps=[
    Step("a", service=LOCAL, action=work, compensation=undo),
    Step("b", service=GATE, action=remote(output=Done), compensation=remote(),
         timeout=GATE_TIMEOUT,
         retry=RetryPolicy(maximum_attempts=10, initial_interval=timedelta(milliseconds=100))),
])  # fmt: skip

BROKEN = Saga("broken", input=Job, steps=[
    Step("a", service=LOCAL, action=work, compensation=undo_fails,
         compensation_retry=RetryPolicy(maximum_attempts=2,
                                        initial_interval=timedelta(milliseconds=100))),
    Step("b", service=LOCAL, action=refuse, compensation=undo),
])  # fmt: skip

STUCK = Saga("stuck", input=Job, steps=[
    Step("a", service=LOCAL, action=work, compensation=undo),
    Step("b", service=LOCAL, action=lose_reply, compensation=undo,
         retry=RetryPolicy(maximum_attempts=1), on_uncertain="park"),
])  # fmt: skip

DEFINITIONS = ",".join(
    f"tests.integration.retention_sagas:{name}" for name in ("QUICK", "GATED", "BROKEN", "STUCK")
)
