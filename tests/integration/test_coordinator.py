"""The order saga on a real broker, real coordinator workers and real HTTP services."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer

from coordinator import SagaClient
from coordinator._client import ensure_topics
from tests.integration.stack import Lifecycle, OrderStack, RemoteService, order

pytestmark = pytest.mark.integration

TERMINAL = {"saga_completed", "saga_compensated", "saga_cancelled"}


def types(life: Lifecycle, saga_id: str) -> list[str]:
    return [e.type for e in life.unique(saga_id)]


async def test_order_outcomes_match_injected_failures(stack: OrderStack) -> None:
    stack.coordinator()
    settings = stack.settings()
    cases = {
        "ok": order("o-ok"),
        "declined": order("o-declined", card="tok_declined"),
        "oos": order("o-oos", sku="SKU-OOS"),
        "outage": order("o-outage", zip_code="99999"),
        "flaky": order("o-flaky", zip_code="55555"),
    }
    async with (
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
    ):
        ids = {
            name: await client.start(
                "order_fulfillment", o, saga_id=f"{stack.prefix}-{name}", business_key=o.order_id
            )
            for name, o in cases.items()
        }
        await life.wait(list(ids.values()), statuses=TERMINAL, timeout=120)

        assert life.status(ids["ok"]) == "saga_completed", [
            (e.type, e.step, e.error) for e in life.unique(ids["ok"])
        ]
        assert life.status(ids["flaky"]) == "saga_completed"
        flaky_failures = [e for e in life.unique(ids["flaky"]) if e.type == "step_failed"]
        assert [(e.step, e.attempt, e.retrying) for e in flaky_failures] == [
            ("ship", 1, True),
            ("ship", 2, True),
        ]

        # declined card: inventory released, then order cancelled; never charged or refunded
        assert life.status(ids["declined"]) == "saga_compensated"
        assert life.compensations(ids["declined"]) == ["reserve_inventory", "create_order"]
        declined = await stack.admin("GET", "/admin/orders/o-declined")
        assert declined["charges"] == []

        assert life.compensations(ids["oos"]) == ["create_order"]

        # shipping outage beyond retries: a 503 is uncertain (the carrier may have booked
        # the shipment), so the shipment is undone by its key first (a tombstone here),
        # then refund, release, cancel — in that order
        assert life.compensations(ids["outage"]) == [
            "ship",
            "charge_payment",
            "reserve_inventory",
            "create_order",
        ]
        ship_attempts = [
            e.attempt
            for e in life.unique(ids["outage"])
            if e.type == "step_started" and e.step == "ship"
        ]
        assert ship_attempts == [1, 2, 3, 4]

        for saga_id in ids.values():
            events = life.unique(saga_id)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))

        view = await client.get(ids["outage"])
        assert view.status == "compensated"
        assert [s.status for s in view.steps] == [
            "compensated",
            "compensated",
            "compensated",
            "compensated",
            "pending",
        ]

    stats = await stack.admin("GET", "/admin/stats")
    assert all(svc["max_applications_per_key"] <= 1 for svc in stats["services"].values()), stats


async def test_compensation_keeps_failing_then_operator_retry(stack: OrderStack) -> None:
    stack.coordinator()
    settings = stack.settings()
    await stack.admin("POST", "/admin/knobs", {"refund_outage": True})
    async with (
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
    ):
        saga_id = await client.start(
            "order_fulfillment", order("o-stuck", zip_code="99999"), business_key="o-stuck"
        )
        await life.wait([saga_id], statuses={"saga_compensation_failed"}, timeout=120)
        view = await client.get(saga_id)
        assert view.status == "compensation_failed"
        assert (view.current_step, view.current_service) == ("charge_payment", "payment")
        assert (
            await stack.admin("GET", "/admin/orders/o-stuck")
            and life.compensations(saga_id) == ["ship"]  # the uncertain shipment, by key
        )

        await stack.admin("POST", "/admin/knobs", {"refund_outage": False})
        await client.retry_compensation(saga_id)
        await life.wait([saga_id], statuses={"saga_compensated"}, timeout=60)
        assert life.compensations(saga_id) == [
            "ship",
            "charge_payment",
            "reserve_inventory",
            "create_order",
        ]
        state = await stack.admin("GET", "/admin/orders/o-stuck")
        assert [c["status"] for c in state["charges"]] == ["refunded"]


async def test_duplicate_start_runs_once(stack: OrderStack) -> None:
    stack.coordinator()
    settings = stack.settings()
    async with (
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
    ):
        saga_id = f"{stack.prefix}-dup"
        for _ in range(3):
            assert (
                await client.start("order_fulfillment", order("o-dup"), saga_id=saga_id) == saga_id
            )
        await life.wait([saga_id], statuses=TERMINAL, timeout=60)
        await asyncio.sleep(1.0)  # give a (wrong) second run time to show up
        kinds = types(life, saga_id)
        assert kinds.count("saga_started") == 1 and kinds.count("saga_completed") == 1
    stats = await stack.admin("GET", "/admin/stats")
    assert stats["services"]["orders"]["counters"]["orders_created"] == 1


async def test_worker_killed_mid_saga_recovers_without_double_effects(stack: OrderStack) -> None:
    await stack.admin("POST", "/admin/knobs", {"latency_ms": {"payments": 150, "shipping": 150}})
    worker = stack.coordinator()
    settings = stack.settings()
    async with (
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
    ):
        ids: list[str] = []

        async def submit() -> None:
            # staggered over ~2 s, so the kill always lands with sagas at every stage
            for i in range(40):
                card = "tok_declined" if i % 5 == 0 else "tok_ok"
                ids.append(
                    await client.start(
                        "order_fulfillment",
                        order(f"o-kill-{i}", card=card),
                        business_key=f"o-kill-{i}",
                    )
                )
                await asyncio.sleep(0.05)

        submitting = asyncio.create_task(submit())
        while sum(1 for s in ids if life.terminal(s)) < 5:
            await asyncio.sleep(0.02)
        worker.kill()  # SIGKILL: nothing flushed, nothing committed
        assert sum(1 for s in ids if life.terminal(s)) < 40, "killed too late to matter"
        await submitting
        stack.coordinator(name="coordinator-restarted")
        await life.wait(ids, statuses=TERMINAL, timeout=180)
        for i, saga_id in enumerate(ids):
            expected = "saga_compensated" if i % 5 == 0 else "saga_completed"
            assert life.status(saga_id) == expected, types(life, saga_id)
            events = life.unique(saga_id)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
    stats = await stack.admin("GET", "/admin/stats")
    for name, svc in stats["services"].items():
        assert svc["max_applications_per_key"] <= 1, (name, svc)
    assert stats["services"]["orders"]["counters"]["orders_created"] == 40
    assert stats["services"]["notifications"]["counters"]["notifications_sent"] == 32


async def test_lost_reply_is_retried_after_deadline_with_same_key(stack: OrderStack) -> None:
    """The test plays a remote notification service (any language could): it drops the
    first request as if the executor died, and answers the retry."""
    settings = stack.settings()
    await ensure_topics(settings, ["notification"])
    stack.coordinator(executors=["order", "inventory", "payment", "shipping"])
    async with (
        RemoteService(stack, "notification") as notifier,
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
    ):
        saga_id = await client.start("order_fulfillment", order("o-lost"), business_key="o-lost")
        first = await notifier.next_request(timeout=60)  # and its reply is lost
        retry = await notifier.next_request(timeout=60)
        await notifier.succeed(retry, {"notification_id": "n-1", "order_id": "o-lost"})
        await life.wait([saga_id], statuses={"saga_completed"}, timeout=60)
        assert (first.attempt, retry.attempt) == (1, 2)
        assert first.idempotency_key == retry.idempotency_key == f"{saga_id}:notify:do"
        timeout = next(e for e in life.unique(saga_id) if e.type == "step_failed")
        assert timeout.error is not None and timeout.error.type == "StepTimeout"


async def test_inline_steps_run_as_local_activities(stack: OrderStack) -> None:
    """Inline steps never touch a step topic; results, retries and compensation still
    follow the saga rules, mixed with a queued step."""
    stack.coordinator(definitions="tests.integration.inline_sagas:MIXED")
    settings = stack.settings()
    async with (
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
    ):
        ok = await client.start("mixed", {}, saga_id=f"{stack.prefix}-ok")
        flaky = await client.start("mixed", {"flaky_at": "b"}, saga_id=f"{stack.prefix}-flaky")
        failed = await client.start("mixed", {"fail_at": "d"}, saga_id=f"{stack.prefix}-failed")
        await life.wait([ok, flaky, failed], statuses=TERMINAL, timeout=60)
        assert life.status(ok) == "saga_completed"
        assert [e.step for e in life.unique(ok) if e.type == "step_succeeded"] == [
            "a",
            "b",
            "c",
            "d",
        ]
        assert life.status(flaky) == "saga_completed"
        retried = [
            (e.step, e.attempt, e.retrying) for e in life.unique(flaky) if e.type == "step_failed"
        ]
        assert retried == [("b", 1, True)]
        assert life.status(failed) == "saga_compensated"
        assert life.compensations(failed) == ["c", "b", "a"]
        for saga_id in (ok, flaky, failed):
            events = life.unique(saga_id)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
    consumer = AIOKafkaConsumer(
        settings.topics.step("inline-work"),
        bootstrap_servers=stack.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        inline_requests = await consumer.getmany(timeout_ms=1000)
        assert sum(len(v) for v in inline_requests.values()) == 0
    finally:
        await consumer.stop()


async def test_deadline_survives_a_worker_crash(stack: OrderStack) -> None:
    """Nothing but the table's durable deadline knows the saga is waiting: the request was
    consumed (by the test, playing a remote service) and never answered, then the worker
    is SIGKILLed. The restarted worker must re-send the attempt from its table. (It may
    first re-send the stored outbox of its partition's last batch, attempt 1's request
    included: the same request again, for the participant's key to absorb.)"""
    settings = stack.settings()
    await ensure_topics(settings, ["notification"])
    executors = ["order", "inventory", "payment", "shipping"]
    worker = stack.coordinator(executors=executors)
    async with (
        RemoteService(stack, "notification") as notifier,
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
    ):
        saga_id = await client.start("order_fulfillment", order("o-crash"), business_key="o-crash")
        first = await notifier.next_request(timeout=60)
        assert first.attempt == 1
        await asyncio.sleep(1.5)  # let the worker commit its offsets and changelog
        worker.kill()
        stack.coordinator(name="coordinator-restarted", executors=executors)
        retry = await notifier.next_request(timeout=90)
        while retry.attempt == 1:  # the last batch's outbox, re-sent as it was
            assert retry.model_dump() == first.model_dump()
            retry = await notifier.next_request(timeout=90)
        assert retry.attempt == 2 and retry.idempotency_key == first.idempotency_key
        await notifier.succeed(retry, {"notification_id": "n-1", "order_id": "o-crash"})
        await life.wait([saga_id], statuses={"saga_completed"}, timeout=60)
