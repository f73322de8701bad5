"""Commands are checked before anything is sent, and saga ids are never random."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from coordinator import CommandError, derive_saga_id
from coordinator._commands import resolve_message, start_message


class Order(BaseModel):
    order_id: str


def test_the_id_derives_from_saga_type_and_business_key() -> None:
    first = start_message("order", Order(order_id="42"), business_key="42")
    again = start_message("order", {"order_id": "42"}, business_key="42")
    assert first.saga_id == again.saga_id == derive_saga_id("order", "42") == "order:42"
    assert first.input == again.input == {"order_id": "42"}
    assert first.business_key == "42"


def test_an_explicit_id_wins_and_the_business_key_is_kept() -> None:
    msg = start_message("order", {}, saga_id="o-1", business_key="42")
    assert (msg.saga_id, msg.business_key) == ("o-1", "42")


def test_no_id_and_no_business_key_is_refused() -> None:
    with pytest.raises(CommandError, match="pass saga_id= or business_key="):
        start_message("order", {})


@pytest.mark.parametrize("value", [[1], "x", 3])
def test_the_input_must_be_an_object(value: object) -> None:
    with pytest.raises(CommandError, match="the input must be a JSON object"):
        start_message("order", value, saga_id="o-1")  # type: ignore[arg-type]


def test_saga_ids_over_200_characters_are_refused() -> None:
    assert start_message("order", {}, saga_id="x" * 200).saga_id == "x" * 200
    with pytest.raises(CommandError, match="saga_id: String should have at most 200"):
        start_message("order", {}, saga_id="x" * 201)


def test_a_resolution_is_one_of_three() -> None:
    assert resolve_message("o-1", "ship", "applied", Order(order_id="42")).output == {
        "order_id": "42"
    }
    with pytest.raises(CommandError, match="resolution"):
        resolve_message("o-1", "ship", "maybe")  # type: ignore[arg-type]
