"""A saga for the CLI tests: a step that can be held open, and a compensation that can be
made to fail until a file disappears (so an operator's retry has something to resume)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from coordinator import (
    NO_RETRY,
    BusinessFailure,
    RetryPolicy,
    Saga,
    Service,
    Step,
    StepContext,
    StepFailure,
)


class Errand(BaseModel):
    hold_while: str | None = None  # "work" runs until this file disappears
    fail_at: str | None = None  # step that refuses (business failure)
    undo_blocked_by: str | None = None  # "prepare" cannot be undone while this file exists


class Done(BaseModel):
    step: str


DESK = Service("cli-desk")
FAST_UNDO_RETRY = RetryPolicy(maximum_attempts=2, initial_interval=timedelta(milliseconds=100))


async def prepare(ctx: StepContext[Errand]) -> Done:
    return Done(step=ctx.step)


async def unprepare(ctx: StepContext[Errand]) -> None:
    blocker = ctx.input.undo_blocked_by
    if blocker and await asyncio.to_thread(Path(blocker).exists):
        raise ConnectionError(f"undo of {ctx.step} blocked by {blocker}")


async def work(ctx: StepContext[Errand]) -> Done:
    hold = ctx.input.hold_while
    while hold and await asyncio.to_thread(Path(hold).exists):
        await asyncio.sleep(0.1)
    if ctx.input.fail_at == ctx.step:
        raise BusinessFailure(f"{ctx.step} refused")
    return Done(step=ctx.step)


ERRAND = Saga("errand", input=Errand, steps=[
    Step("prepare", service=DESK, action=prepare, compensation=unprepare,
         compensation_retry=FAST_UNDO_RETRY),
    Step("work", service=DESK, action=work, timeout=timedelta(seconds=60)),
])  # fmt: skip


class Chore(BaseModel):
    what: str = "dishes"


async def do_chore(ctx: StepContext[Chore]) -> Done:
    return Done(step=ctx.step)


# not loaded by the first worker of the CLI tests: its starts are dead-lettered until a
# worker that knows it runs, and then re-submitted
CHORE = Saga("chore", input=Chore, steps=[Step("do", service=DESK, action=do_chore)])


class Parcel(BaseModel):
    lose_replies: int = 1  # attempts of "send" whose outcome is uncertain (reply lost)


class Sent(BaseModel):
    tracking: str


async def pack(ctx: StepContext[Parcel]) -> Done:
    return Done(step=ctx.step)


async def unpack(ctx: StepContext[Parcel]) -> None:
    return None


async def send(ctx: StepContext[Parcel]) -> Sent:
    if ctx.attempt <= ctx.input.lose_replies:
        raise StepFailure("the courier took the parcel but never answered", uncertain=True)
    return Sent(tracking=f"T-{ctx.attempt}")


# "send" parks the saga when its outcome is uncertain: an operator resolves it
PARCEL = Saga("parcel", input=Parcel, steps=[
    Step("pack", service=DESK, action=pack, compensation=unpack),
    Step("send", service=DESK, action=send, retry=NO_RETRY, on_uncertain="park"),
])  # fmt: skip
