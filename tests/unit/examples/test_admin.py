"""The admin API: knobs, reset, stats; and the command-line entry point."""

from __future__ import annotations

import re

import httpx
import pytest

from examples.order_fulfillment.knobs import parse_args
from examples.order_fulfillment.models import Knobs, ResetReply
from examples.order_fulfillment.services import run_services
from infra.processes import Process
from tests.unit.examples.helpers import charge, post, set_knobs, stats

KNOBS = '{"flaky_failures": 7}'
READY = re.compile(r"^services ready on (http://127\.0\.0\.1:\d+)$", re.MULTILINE)


async def test_knobs_default_and_partial_update(client: httpx.AsyncClient) -> None:
    assert Knobs.model_validate_json((await client.get("/admin/knobs")).content) == Knobs()
    updated = await set_knobs(client, flaky_failures=5, declined_cards=["tok_a", "tok_b"])
    assert updated.flaky_failures == 5
    assert updated.declined_cards == {"tok_a", "tok_b"}
    assert updated.out_of_stock_skus == {"SKU-OOS"}


async def test_unknown_knob_is_rejected_and_nothing_changes(client: httpx.AsyncClient) -> None:
    response = await client.post("/admin/knobs", json={"flaky_failure": 3, "refund_outage": True})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_knobs"
    assert response.json()["details"][0]["loc"] == ["flaky_failure"]
    assert "flaky_failures" in response.json()["message"]
    assert Knobs.model_validate_json((await client.get("/admin/knobs")).content) == Knobs()


async def test_reset_clears_state_and_keeps_knobs_unless_given(client: httpx.AsyncClient) -> None:
    await set_knobs(client, refund_outage=True)
    await post(client, "/payments/charges", charge(), key="k")
    kept = ResetReply.model_validate_json((await client.post("/admin/reset")).content)
    assert kept.knobs.refund_outage
    payments = (await stats(client)).services["payments"]
    assert payments.effects == {} and payments.counters["amount_charged_cents"] == 0
    # The key is free again after a reset.
    assert (await post(client, "/payments/charges", charge(), key="k")).status_code == 201

    replaced = await client.post("/admin/reset", json={"knobs": {"flaky_failures": 0}})
    assert ResetReply.model_validate_json(replaced.content).knobs == Knobs(flaky_failures=0)


async def test_run_services_takes_initial_knobs() -> None:
    async with (
        run_services(port=0, knobs=Knobs(declined_cards=frozenset({"tok_ok"}))) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        assert (await post(client, "/payments/charges", charge(), key="k")).status_code == 402


def test_settings_from_environment_and_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDER_SERVICES_KNOBS__FLAKY_FAILURES", "4")
    monkeypatch.setenv("ORDER_SERVICES_PORT", "9000")
    settings = parse_args(["--knobs", '{"refund_outage": true}'])
    assert settings.port == 9000
    assert (settings.knobs.flaky_failures, settings.knobs.refund_outage) == (4, True)
    assert parse_args(["--port", "0"]).port == 0


def test_command_line_prints_ready_line_and_stops_on_sigterm() -> None:
    process = Process(
        ["-m", "examples.order_fulfillment.services", "--port", "0", "--knobs", KNOBS],
        name="services",
    ).start()
    try:
        url = process.wait_for_output(READY, timeout=60).group(1)
        assert httpx.get(f"{url}/admin/knobs").json()["flaky_failures"] == 7
        process.terminate()
        assert process.wait(30) == 0
    finally:
        process.close()
