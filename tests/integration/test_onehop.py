"""HTTP steps in one Kafka hop (coordinator._onehop), on a real broker and real services.

The order saga's five services are HTTP participants the worker executes itself: each
attempt runs as a task of the worker, started once the saga record is acknowledged, and
its result joins the saga's partition lane directly (coordinator._local): neither the
step topics nor the inbox carry it. The participant contract (Idempotency-Key,
Saga-Compensates) is unchanged; an attempt lost with its worker is retried by its
durable deadline with the same key; events a killed worker never sent are re-sent by the
next owner, and only then: a worker that stops cleanly marks them sent.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from coordinator import SagaClient
from coordinator._routing import partition_for
from infra.processes import Process, free_port
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
    return [json.loads(value) for _, value in await raw_records(bootstrap, topic) if value]


async def raw_records(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """The ``(key, value)`` of every record of ``topic`` (read until it is quiet)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        out: list[tuple[bytes | None, bytes | None]] = []
        while batch := await consumer.getmany(timeout_ms=2000):
            out += [(r.key, r.value) for rs in batch.values() for r in rs]
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
    # the results never crossed Kafka: the inbox holds the two starts (and the outage's
    # retry timers), no result
    kinds = [r["kind"] for r in await records_in(stack.bootstrap, settings.topics.inbox)]
    assert kinds.count("start") == 2
    assert "result" not in kinds, kinds
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


async def test_events_a_killed_worker_never_sent_are_sent_by_the_next_owner(
    stack: OrderStack,
) -> None:
    """The worker dies after writing the record that applied a local result (the order
    created, the stock reserved) and before sending its events: no inbox record will
    ever be read again to re-send them. The restarted worker re-sends the outbox of the
    partition's last batch before applying anything, so the saga's events arrive whole
    (``seq`` 1, 2, 3... without a hole), and the lost launch is retried by its deadline."""
    settings = stack.settings()
    # the start's inbox record is committed (every second) long before the kill: reading
    # it again cannot be what re-sends the lost events
    await stack.admin("POST", "/admin/knobs", {"latency_ms": {"inventory": 2500}})
    # record batches: 1 the start, 2 create_order's result, 3 reserve_inventory's result
    crashing = stack.coordinator(env={"SAGA_FAULT_KILL_AFTER_RECORDS": "3"})
    async with (
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
    ):
        saga_id = await client.start("order_fulfillment", order("h-sends"), saga_id=stack.prefix)
        await crashing.output_ready("SAGA_FAULT_KILL_AFTER_RECORDS reached")
        crashing.wait(30)
        before = [(e.type, e.step) for e in life.unique(saga_id)]
        assert ("step_succeeded", "reserve_inventory") not in before, before
        await stack.admin("POST", "/admin/knobs", {"latency_ms": {}})
        restarted = stack.coordinator(name="coordinator-restarted")
        await life.wait([saga_id], statuses={"saga_completed"}, timeout=120)
        events = life.unique(saga_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        steps = [(e.type, e.step) for e in events]
        assert steps.index(("step_succeeded", "reserve_inventory")) < steps.index(
            ("step_succeeded", "charge_payment")
        )
    assert "re-sending the outbox of 1 sagas of its last batch" in restarted.output()
    stats = await stack.admin("GET", "/admin/stats")
    assert all(svc["max_applications_per_key"] <= 1 for svc in stats["services"].values())


SENT_IN_FULL = "was sent in full; nothing to re-send"
RESENT = "re-sending the outbox"


async def logged(worker: Process, needle: str, count: int, timeout: float = 90) -> None:
    """Wait until ``worker`` logged ``needle`` at least ``count`` times."""
    deadline = time.monotonic() + timeout
    while worker.output().count(needle) < count:
        assert time.monotonic() < deadline, worker.output()[-4000:]
        await asyncio.sleep(0.2)


async def test_a_clean_rebalance_and_a_clean_restart_re_send_nothing(stack: OrderStack) -> None:
    """Lanes that stop cleanly (a worker joining, a graceful stop) finished every batch's
    sends, so the worker marks each partition's last batch as sent, and its next owner
    re-sends nothing: not one lifecycle record more, however often partitions move."""
    settings = stack.settings()
    lifecycle = settings.topics.lifecycle
    first = stack.coordinator()
    saga_ids = []  # one saga per partition: each has a last batch
    for i in range(100):
        if len(saga_ids) < stack.partitions:
            saga_id = f"{stack.prefix}-{i}"
            homes = {partition_for(s, stack.partitions) for s in saga_ids}
            if partition_for(saga_id, stack.partitions) not in homes:
                saga_ids.append(saga_id)
    assert len(saga_ids) == stack.partitions
    async with SagaClient(settings) as client:
        async with Lifecycle(stack.bootstrap, lifecycle) as life:
            for saga_id in saga_ids:
                await client.start("order_fulfillment", order(saga_id), saga_id=saga_id)
            await life.wait(saga_ids, statuses={"saga_completed"}, timeout=120)
        sent = await raw_records(stack.bootstrap, lifecycle)

        second = stack.coordinator(name="joining", web_port=free_port())  # a rebalance
        deadline = time.monotonic() + 90
        while (
            first.output().count(SENT_IN_FULL) + second.output().count(SENT_IN_FULL)
            < stack.partitions
        ):
            assert time.monotonic() < deadline, (first.output()[-3000:], second.output()[-3000:])
            await asyncio.sleep(0.2)
        assert "sent marks written" in first.output()
        before = second.output().count(SENT_IN_FULL)
        first.stop()  # graceful: the joiner takes every partition
        await logged(second, SENT_IN_FULL, before + stack.partitions)
        second.stop()
        third = stack.coordinator(name="restarted")  # a clean restart of the whole group
        await logged(third, SENT_IN_FULL, stack.partitions)
        late = f"{stack.prefix}-late"  # and the group still works
        async with Lifecycle(stack.bootstrap, lifecycle) as life:
            await client.start("order_fulfillment", order(late), saga_id=late)
            await life.wait([late], statuses={"saga_completed"}, timeout=120)
    for worker in (first, second, third):
        assert RESENT not in worker.output(), worker.name
    after = await raw_records(stack.bootstrap, lifecycle)
    kept = sorted(r for r in after if r[0] != late.encode())
    assert kept == sorted(sent), "no lifecycle record was re-sent"
