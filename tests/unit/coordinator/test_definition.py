from __future__ import annotations

import pytest
from pydantic import BaseModel

from coordinator import DefinitionError, Saga, SagaRegistry, Service, Step, UnknownSagaError, http
from tests.unit.coordinator.sagas import SVC, Item, Out, linear_saga, ok, undo


def test_duplicate_step_names_are_rejected_with_saga_and_step() -> None:
    with pytest.raises(DefinitionError, match=r"saga 'dup' v1 step 'a': duplicate step name"):
        Saga(
            "dup",
            input=Item,
            steps=[Step("a", service=SVC, action=ok), Step("a", service=SVC, action=ok)],
        )


def test_compensation_must_be_callable() -> None:
    with pytest.raises(DefinitionError, match=r"step 'a': compensation 42 is not callable"):
        Saga("c", input=Item, steps=[Step("a", service=SVC, action=ok, compensation=42)])  # type: ignore[arg-type]


def test_sync_action_is_rejected() -> None:
    def sync(ctx: object) -> None: ...

    with pytest.raises(DefinitionError, match="must be an `async def`"):
        Saga("s", input=Item, steps=[Step("a", service=SVC, action=sync)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/x/{missing}", "not a field of Item"),
        ("/x/{later.ref}", "'later' is not an earlier step"),
        ("/x/{a.nope}", "Out \\(output of 'a'\\) has no field 'nope'"),
        ("/x/{}", "empty"),
        ("/x/{n", "bad URL template"),
    ],
)
def test_bad_url_templates_name_the_problem(path: str, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        Saga(
            "u",
            input=Item,
            steps=[
                Step("a", service=SVC, action=ok),
                Step("b", service=SVC, action=http("POST", path)),
                Step("later", service=SVC, action=ok),
            ],
        )


def test_output_model_is_inferred_from_return_annotation() -> None:
    saga = linear_saga(2)
    assert saga.output_models() == {"s0": Out, "s1": Out}


def test_input_must_be_a_model_and_steps_nonempty() -> None:
    with pytest.raises(DefinitionError, match="at least one step"):
        Saga("e", input=Item, steps=[])
    with pytest.raises(DefinitionError, match="pydantic BaseModel"):
        Saga("e", input=dict, steps=[Step("a", service=SVC, action=ok)])  # type: ignore[type-var]


def test_service_names_must_be_topic_safe() -> None:
    with pytest.raises(DefinitionError, match="Kafka topic name"):
        Service("Bad Name")


def test_registry_versions_and_unknown_types() -> None:
    class In(BaseModel):
        x: int = 0

    v1 = Saga("v", version=1, input=In, steps=[Step("a", service=SVC, action=ok)])
    v2 = Saga(
        "v", version=2, input=In, steps=[Step("a", service=SVC, action=ok, compensation=undo)]
    )
    registry = SagaRegistry([v1, v2])
    assert registry.get("v") is v2
    assert registry.get("v", 1) is v1
    with pytest.raises(UnknownSagaError, match="saga type 'v' version 3 is not registered"):
        registry.get("v", 3)
    with pytest.raises(DefinitionError, match="bump its version"):
        registry.register(Saga("v", version=1, input=In, steps=[Step("b", service=SVC, action=ok)]))


def test_a_service_cannot_be_both_remote_and_inline() -> None:
    with pytest.raises(DefinitionError, match="remote=True and inline=True exclude each other"):
        Service("x", remote=True, inline=True)


def test_a_compensation_url_cannot_need_its_own_steps_output() -> None:
    from pydantic import BaseModel

    from coordinator import Saga, Service, Step, http

    class In(BaseModel):
        n: int = 1

    class Charge(BaseModel):
        charge_id: str

    with pytest.raises(DefinitionError, match=r"own output.*Saga-Compensates"):
        Saga("pay", input=In, steps=[
            Step("charge", service=Service("payments"),
                 action=http("POST", "/charges", output=Charge),
                 compensation=http("POST", "/charges/{charge.charge_id}/refund")),
        ])  # fmt: skip
