"""A remote participant's step is declared with remote(), never with a placeholder."""

from __future__ import annotations

import httpx
import pytest
from pydantic import BaseModel

from coordinator import DefinitionError, Saga, Service, Step, StepContext, remote
from coordinator.testing import SagaTestKit


class Job(BaseModel):
    n: int = 1


class Charged(BaseModel):
    charge_id: str


NODE = Service("payments-node", remote=True)
LOCAL = Service("local")


async def local(ctx: StepContext[Job]) -> None:
    return None


def saga(*steps: Step) -> Saga[Job]:
    return Saga("remote-job", input=Job, steps=steps)


def test_a_remote_step_takes_its_output_model_from_remote() -> None:
    defined = saga(
        Step("charge", service=NODE, action=remote(output=Charged), compensation=remote())
    )
    assert defined.output_models() == {"charge": Charged}


def test_a_remote_service_refuses_a_placeholder_function() -> None:
    with pytest.raises(
        DefinitionError,
        match="service 'payments-node' is remote, so its participant runs the action",
    ):
        saga(Step("charge", service=NODE, action=local))
    with pytest.raises(DefinitionError, match="runs the compensation; pass compensation=remote"):
        saga(Step("charge", service=NODE, action=remote(), compensation=local))


def test_remote_needs_a_remote_service() -> None:
    with pytest.raises(
        DefinitionError, match=r"action=remote\(\) needs Service\('local', remote=True\)"
    ):
        saga(Step("charge", service=LOCAL, action=remote()))


async def test_the_test_kit_names_what_stands_in_for_a_remote_step() -> None:
    defined = saga(
        Step("prepare", service=LOCAL, action=local, compensation=local),
        Step("charge", service=NODE, action=remote(output=Charged)),
    )

    async def charge(ctx: StepContext[Job]) -> Charged:
        return Charged(charge_id="c-1")

    transport = httpx.MockTransport(lambda r: httpx.Response(500))
    async with SagaTestKit(defined, transport=transport) as kit:
        run = await kit.run(Job())
        assert run.status == "compensated"
        assert run.state is not None and run.state.error is not None
        assert "runs in the remote participant 'payments-node'" in run.state.error.message
        assert "SagaTestKit.replace" in run.state.error.message

        run = await kit.replace("charge", charge).run(Job(), saga_id="saga-2")
    assert run.status == "completed"
