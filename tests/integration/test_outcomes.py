"""The saga guarantee for every outcome, on a real broker with real participants.

* a participant slower than the step timeout: retries run out, the late effect happens
  anyway, and the saga compensates *including* that step (the participant's ledger
  shows the effect undone);
* the same with an operator's cancel landing in the backoff after a timeout;
* a remote participant (plain aiokafka, no project imports) with a skewed clock, naive
  timestamps and a malformed output: time follows the coordinator, the naive message is a
  dead letter, the malformed output fails only its step and the earlier steps are undone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from coordinator import SagaClient
from tests.integration.stack import Lifecycle, OrderStack, order

pytestmark = pytest.mark.integration

TERMINAL = {"saga_completed", "saga_compensated", "saga_cancelled"}
SAGAS = "tests.integration.outcome_sagas:EXHAUSTED,tests.integration.outcome_sagas:BACKOFF"


async def ledger(stack: OrderStack, service: str) -> dict[str, str]:
    stats = await stack.admin("GET", "/admin/stats")
    return dict(stats["services"][service]["ledger"])


async def test_a_participant_slower_than_the_timeout_is_compensated(stack: OrderStack) -> None:
    await stack.admin("POST", "/admin/knobs", {"latency_ms": {"shipping": 4000}})
    stack.coordinator(definitions=SAGAS)
    settings = stack.settings()
    saga_id = f"{stack.prefix}-slow"
    async with (
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
    ):
        await client.start("slow_ship", order("o-slow"), saga_id=saga_id)
        await life.wait([saga_id], statuses=TERMINAL, timeout=90)
        assert life.status(saga_id) == "saga_compensated"
        failures = [(e.attempt, e.error and e.error.uncertain) for e in life.unique(saga_id)
                    if e.type == "step_failed"]  # fmt: skip
        assert failures == [(1, True), (2, True)]  # both attempts timed out: uncertain
        assert life.compensations(saga_id) == ["ship", "create_order"]
    # the carrier booked the shipment after the saga gave up on it; the undo, queued
    # behind that booking on the same key, cancelled it
    await asyncio.sleep(0.5)
    assert await ledger(stack, "shipping") == {f"ship:{saga_id}:ship:do": "undone"}
    stats = await stack.admin("GET", "/admin/stats")
    counters = stats["services"]["shipping"]["counters"]
    assert counters["shipments_created"] == 1 and counters["shipments_cancelled"] == 1
    assert stats["services"]["shipping"]["max_applications_per_key"] == 1


async def test_a_cancel_in_the_backoff_after_a_timeout_undoes_the_late_effect(
    stack: OrderStack,
) -> None:
    await stack.admin("POST", "/admin/knobs", {"latency_ms": {"shipping": 2500}})
    stack.coordinator(definitions=SAGAS)
    settings = stack.settings()
    saga_id = f"{stack.prefix}-cancel"
    async with (
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
    ):
        await client.start("slow_ship_backoff", order("o-cancel"), saga_id=saga_id)
        deadline = time.monotonic() + 60
        while not any(e.type == "step_failed" for e in life.unique(saga_id)):
            assert time.monotonic() < deadline, life.unique(saga_id)
            await asyncio.sleep(0.1)
        await client.cancel(saga_id, reason="customer changed their mind")
        await life.wait([saga_id], statuses=TERMINAL, timeout=60)
        assert life.status(saga_id) == "saga_cancelled"
        assert life.compensations(saga_id) == ["ship", "create_order"]
    await asyncio.sleep(0.5)
    assert await ledger(stack, "shipping") == {f"ship:{saga_id}:ship:do": "undone"}
    orders = await ledger(stack, "orders")
    assert orders == {f"create:{saga_id}:create_order:do": "undone"}


class SkewedParticipant:
    """The payment service written as someone else would: raw aiokafka and JSON.

    Its clock is an hour behind, it sends naive timestamps on request, and it replies
    with a malformed output on request — by the saga id's suffix.
    """

    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
        )
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        self.seen: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SkewedParticipant:
        await self.consumer.start()
        await self.producer.start()
        self.task = asyncio.create_task(self.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.consumer.stop()
        await self.producer.stop()

    async def run(self) -> None:
        async for record in self.consumer:
            request = json.loads(record.value)
            self.seen.append(request)
            await self.answer(request)

    async def answer(self, req: dict[str, Any]) -> None:
        saga_id: str = req["saga_id"]
        skewed = datetime.now(UTC) - timedelta(hours=1)
        if saga_id.endswith("ahead"):
            skewed = datetime.now(UTC) + timedelta(days=1)
        at = skewed.isoformat()
        if saga_id.endswith("naive") and req["attempt"] == 1:
            at = skewed.replace(tzinfo=None).isoformat()  # Java's LocalDateTime, say
        reply: dict[str, Any] = {
            "kind": "result",
            "saga_id": saga_id,
            "at": at,
            "step": req["step"],
            "phase": req["phase"],
            "attempt": req["attempt"],
            "ok": True,
        }
        if req["phase"] == "action":
            reply["output"] = {"charge_id": f"ch-{saga_id}", "order_id": "o",
                               "amount_cents": 1, "status": "charged"}  # fmt: skip
            if saga_id.endswith("malformed"):
                reply["output"] = {"charge": "not the ChargeReply model"}
            if saga_id.endswith("ahead") and req["attempt"] == 1:
                reply["ok"], reply["output"] = False, None
                reply["error"] = {"type": "Busy", "message": "503 before acting"}
        stamp = int(skewed.timestamp() * 1000)  # its own clock on the record, too
        await self.producer.send_and_wait(
            req["reply_to"], json.dumps(reply).encode(), key=saga_id.encode(), timestamp_ms=stamp
        )


async def test_a_remote_participant_with_a_skewed_clock_naive_times_and_bad_output(
    stack: OrderStack,
) -> None:
    services = ["order", "inventory", "shipping", "notification"]  # payment is remote
    stack.coordinator(executors=services)
    settings = stack.settings()
    ids = {case: f"{stack.prefix}-{case}" for case in ("behind", "ahead", "naive", "malformed")}
    async with (
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
        SkewedParticipant(
            stack.bootstrap, settings.topics.step("payment"), f"{stack.prefix}-payment"
        ) as payment,
    ):
        for case, saga_id in ids.items():
            await client.start("order_fulfillment", order(f"o-{case}"), saga_id=saga_id)
        await life.wait(list(ids.values()), statuses=TERMINAL, timeout=120)

        # an hour behind: deadlines follow the coordinator's clock, nothing times out
        assert life.status(ids["behind"]) == "saga_completed"
        assert not [e for e in life.unique(ids["behind"]) if e.type == "step_failed"]
        # a day ahead: its failure is retried after the policy's backoff, not a day later
        assert life.status(ids["ahead"]) == "saga_completed"
        retried = [e for e in life.unique(ids["ahead"]) if e.type == "step_started"
                   and e.step == "charge_payment"]  # fmt: skip
        assert [e.attempt for e in retried] == [1, 2]
        assert retried[1].occurred_at - retried[0].occurred_at < timedelta(seconds=30)
        # naive timestamp: dead-lettered; the owning worker's deadline retried the attempt
        assert life.status(ids["naive"]) == "saga_completed"
        outcomes = ("step_failed", "step_succeeded")
        naive = [(e.type, e.attempt) for e in life.unique(ids["naive"])
                 if e.step == "charge_payment" and e.type in outcomes]  # fmt: skip
        assert naive == [("step_failed", 1), ("step_succeeded", 2)]
        # malformed output: that step fails (and is undone by key), the earlier ones too
        assert life.status(ids["malformed"]) == "saga_compensated"
        bad = [e for e in life.unique(ids["malformed"]) if e.type == "step_failed"]
        assert bad[0].error is not None and bad[0].error.type == "OutputValidationError"
        assert life.compensations(ids["malformed"]) == [
            "charge_payment",
            "reserve_inventory",
            "create_order",
        ]
        undo = [r for r in payment.seen
                if r["saga_id"] == ids["malformed"] and r["phase"] == "compensation"]  # fmt: skip
        assert undo and undo[0]["compensates"] == f"{ids['malformed']}:charge_payment:do"
        assert "charge_payment" not in undo[0]["outputs"]  # the malformed output never stored

    letters = await read_dead_letters(stack)
    naive_letters = [d for d in letters if d.get("key") == ids["naive"]]
    assert naive_letters and "timezone" in naive_letters[0]["reason"]


async def read_dead_letters(stack: OrderStack) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        stack.settings().topics.deadletters,
        bootstrap_servers=stack.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=3000)
        return [json.loads(r.value) for records in batch.values() for r in records]
    finally:
        await consumer.stop()
