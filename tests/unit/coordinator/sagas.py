"""Small sagas for unit tests."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from coordinator import RetryPolicy, Saga, Service, Step, StepContext, http


class Item(BaseModel):
    n: int = 1


class Out(BaseModel):
    ref: str


async def ok(ctx: StepContext[Item]) -> Out:
    return Out(ref=f"{ctx.step}-{ctx.saga_id}")


async def undo(ctx: StepContext[Item]) -> None:
    return None


SVC = Service("svc")
FAST = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(milliseconds=10))


def linear_saga(n: int, *, without_compensation: frozenset[int] = frozenset()) -> Saga[Item]:
    return Saga(
        f"linear{n}",
        input=Item,
        steps=[
            Step(
                f"s{i}",
                service=SVC,
                action=ok,
                compensation=None if i in without_compensation else undo,
                retry=FAST,
                compensation_retry=FAST,
                timeout=timedelta(seconds=1),
            )
            for i in range(n)
        ],
    )


class Charge(BaseModel):
    charge_id: str


PAYMENTS = Service("payments", url="http://payments.test")

HTTP_SAGA = Saga(
    "pay",
    input=Item,
    steps=[
        Step(
            "charge",
            service=PAYMENTS,
            action=http("POST", "/charges", body=lambda ctx: {"n": ctx.input.n}, output=Charge),
            compensation=http("POST", "/charges/undo"),  # by key (Saga-Compensates)
        ),
        Step("after", service=SVC, action=ok, compensation=undo),
    ],
)
