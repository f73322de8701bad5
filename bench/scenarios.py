"""Scenario definitions shared by every engine in the benchmark.

A scenario fixes the number of steps, whether steps run in-process or call the
bench's HTTP services, and which sagas fail. The failure decision is made by the
driver when it builds a saga's input (``fail_at``), so every engine sees exactly
the same sequence of successes and failures for the same seed, and the driver can
check each terminal outcome against the saga rule: either all steps complete, or
steps 1..k-1 complete and their compensations run in reverse order (k-1..1).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

StepKind = Literal["local", "http"]

#: Terminal statuses an engine may report.
COMPLETED = "completed"
COMPENSATED = "compensated"
FAILED = "failed"  # anything else: engine error, compensation failure, ...


@dataclass(frozen=True)
class Scenario:
    """One benchmark scenario."""

    name: str
    steps: int
    kind: StepKind
    failure_rate: float
    #: Step that fails for a failing saga; ``None`` means uniformly random in 1..steps.
    fail_step: int | None
    description: str


SCENARIOS: Mapping[str, Scenario] = {
    "simple": Scenario(
        name="simple",
        steps=3,
        kind="local",
        failure_rate=0.0,
        fail_step=None,
        description="3 in-process steps, all succeed",
    ),
    "medium": Scenario(
        name="medium",
        steps=5,
        kind="http",
        failure_rate=0.20,
        fail_step=4,
        description="5 HTTP steps (local aiohttp services); 20% fail at step 4, "
        "compensations 3..1 over HTTP",
    ),
    "complex": Scenario(
        name="complex",
        steps=10,
        kind="local",
        failure_rate=0.10,
        fail_step=None,
        description="10 in-process steps; 10% fail at a uniformly random step, "
        "compensations in reverse",
    ),
}


@dataclass(frozen=True)
class SagaInput:
    """What the driver hands to ``Engine.start`` (JSON-serialisable via ``to_json``)."""

    scenario: str
    fail_at: int | None
    payload: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "fail_at": self.fail_at, "payload": dict(self.payload)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SagaInput:
        return cls(
            scenario=str(data["scenario"]),
            fail_at=data.get("fail_at"),
            payload=dict(data.get("payload") or {}),
        )


@dataclass(frozen=True)
class Outcome:
    """A terminal outcome as reported by an engine."""

    saga_id: str
    status: str
    #: Steps whose compensation ran, in the order they ran.
    compensated: tuple[int, ...] = ()
    error: str | None = None


class BusinessFailure(Exception):
    """A non-retryable step failure (e.g. card declined): starts compensation."""

    def __init__(self, step: int) -> None:
        super().__init__(step)  # args == (step,), so it pickles and round-trips
        self.step = step

    def __str__(self) -> str:
        return f"step {self.step} failed (business failure)"


def make_input(scenario: Scenario, rng: random.Random, order_no: int) -> SagaInput:
    """Build one saga input; ``rng`` decides whether and where it fails."""
    fail_at: int | None = None
    if scenario.failure_rate > 0 and rng.random() < scenario.failure_rate:
        fail_at = scenario.fail_step or rng.randint(1, scenario.steps)
    payload = {"order_no": order_no, "amount_cents": 1000 + order_no % 9000, "sku": "SKU-42"}
    return SagaInput(scenario=scenario.name, fail_at=fail_at, payload=payload)


def expected(saga_input: SagaInput) -> tuple[str, tuple[int, ...]]:
    """The only valid terminal outcome for an input: status and compensation order."""
    if saga_input.fail_at is None:
        return COMPLETED, ()
    return COMPENSATED, tuple(range(saga_input.fail_at - 1, 0, -1))


def is_valid(saga_input: SagaInput, outcome: Outcome) -> bool:
    status, comps = expected(saga_input)
    return outcome.status == status and tuple(outcome.compensated) == comps


# --- the work a step does -------------------------------------------------------------
# In-process steps do a small, fixed amount of CPU work so that engines are compared on
# orchestration overhead, not on the step bodies. Every engine must call these.


def local_step(saga_id: str, step: int, fail_at: int | None) -> dict[str, Any]:
    """Body of in-process step ``step``; raises ``BusinessFailure`` when it must fail."""
    if fail_at == step:
        raise BusinessFailure(step)
    digest = hashlib.sha256(f"{saga_id}:{step}".encode()).hexdigest()
    return {"step": step, "ref": digest[:16]}


def local_compensation(saga_id: str, step: int) -> dict[str, Any]:
    """Body of in-process compensation for ``step``."""
    digest = hashlib.sha256(f"{saga_id}:c{step}".encode()).hexdigest()
    return {"compensated": step, "ref": digest[:16]}


# --- HTTP steps ------------------------------------------------------------------------
# Step n of an HTTP scenario is POST {base}/svc{n}/step with JSON body
# {"saga_id", "step", "fail_at", "payload"} and header Idempotency-Key: "{saga_id}:{n}".
# The service answers 200 with a JSON result, or 422 for a business failure.
# Compensation n is POST {base}/svc{n}/compensate, header Idempotency-Key "{saga_id}:c{n}".

HTTP_BUSINESS_FAILURE = 422


def http_step_path(step: int) -> str:
    return f"/svc{step}/step"


def http_compensation_path(step: int) -> str:
    return f"/svc{step}/compensate"


def idempotency_key(saga_id: str, step: int, compensation: bool = False) -> str:
    return f"{saga_id}:{'c' if compensation else ''}{step}"


def http_step_body(saga_id: str, step: int, saga_input: SagaInput) -> dict[str, Any]:
    return {
        "saga_id": saga_id,
        "step": step,
        "fail_at": saga_input.fail_at,
        "payload": dict(saga_input.payload),
    }
