"""HTTP steps in one Kafka hop (coordinator._onehop), on a real broker and real services.

The order saga's five services are HTTP participants the worker executes itself: each
attempt runs as a task of the worker, started once the saga record is acknowledged, and
only its result crosses Kafka (on the inbox). Step topics stay empty; the participant
contract (Idempotency-Key, Saga-Compensates) is unchanged; an attempt lost with its
worker is retried by its durable deadline with the same key.
"""

from __future__ import annotations

import json

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from coordinator import SagaClient
from tests.integration.stack import Lifecycle, OrderStack, order

pytestmark = pytest.mark.integration

SERVICES = ["order", "inventory", "payment", "shipping", "notification"]


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> int:
    """How many records ``topic`` ever received (sum of its partitions' end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def records_in(bootstrap: str, topic: str) -> list[dict[str, object]]:
    """The records of ``topic`` (read from its beginning until it is quiet), decoded."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        out: list[dict[str, object]] = []
        while batch := await consumer.getmany(timeout_ms=2000):
            out += [json.loads(r.value) for rs in batch.values() for r in rs if r.value]
        return out
    finally:
        await consumer.stop()


async def test_http_steps_cross_kafka_once_and_keep_the_participant_contract(
    stack: OrderStack,
) -> None:
    stack.coordinator()
    settings = stack.settings()
    async with (
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
    ):
        ok = await client.start("order_fulfillment", order("h-ok"), saga_id=f"{stack.prefix}-ok")
        outage = await client.start(
            "order_fulfillment", order("h-out", zip_code="99999"), saga_id=f"{stack.prefix}-out"
        )
        await life.wait([ok, outage], statuses={"saga_completed", "saga_compensated"}, timeout=120)
        assert life.status(ok) == "saga_completed"
        # the shipping outage (503: uncertain) is undone by its key first, then the rest
        assert life.status(outage) == "saga_compensated"
        assert life.compensations(outage) == [
            "ship",
            "charge_payment",
            "reserve_inventory",
            "create_order",
        ]
    for service in SERVICES:
        topic = settings.topics.step(service)
        assert await end_offsets(stack.bootstrap, topic, settings.partitions) == 0, service
    inbox = await records_in(stack.bootstrap, settings.topics.inbox)
    results = [r for r in inbox if r["kind"] == "result"]
    assert {(r["saga_id"], r["step"]) for r in results if r["ok"]} >= {
        (ok, s) for s in ("create_order", "reserve_inventory", "charge_payment", "ship", "notify")
    }
    stats = await stack.admin("GET", "/admin/stats")
    assert all(svc["max_applications_per_key"] <= 1 for svc in stats["services"].values())
    # Saga-Compensates reached the carrier: the uncertain shipment's key is closed
    ship_key = f"{outage}:ship:do"
    shipping = stats["services"]["shipping"]["ledger"]
    assert [v for k, v in shipping.items() if k.endswith(ship_key)] in (["tombstone"], ["undone"])


async def test_an_attempt_lost_with_its_worker_is_retried_by_its_durable_deadline(
    stack: OrderStack,
) -> None:
    """The worker dies right after the start's record is acknowledged, before the first
    HTTP call is launched. Nothing but the record's deadline knows about the attempt: the
    restarted worker's timer retries it (attempt 2, same key), and the saga completes."""
    settings = stack.settings()
    crashing = stack.coordinator(env={"SAGA_FAULT_KILL_AFTER_RECORDS": "1"})
    async with (
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
    ):
        saga_id = await client.start("order_fulfillment", order("h-kill"), saga_id=stack.prefix)
        await crashing.output_ready("SAGA_FAULT_KILL_AFTER_RECORDS reached")  # it fired
        crashing.wait(30)  # the SIGKILL follows the log line
        orders = await stack.admin("GET", "/admin/orders/h-kill")
        assert orders["order"] is None, "the killed worker never called the order service"
        stack.coordinator(name="coordinator-restarted")
        await life.wait([saga_id], statuses={"saga_completed"}, timeout=120)
        first = [
            (e.type, e.attempt, e.error.type if e.error else None)
            for e in life.unique(saga_id)
            if e.step == "create_order"
        ]
        assert first == [
            ("step_started", 1, None),
            ("step_failed", 1, "StepTimeout"),
            ("step_started", 2, None),
            ("step_succeeded", 2, None),
        ]
        events = life.unique(saga_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
    stats = await stack.admin("GET", "/admin/stats")
    assert stats["services"]["orders"]["counters"]["orders_created"] == 1
    assert all(svc["max_applications_per_key"] <= 1 for svc in stats["services"].values())
