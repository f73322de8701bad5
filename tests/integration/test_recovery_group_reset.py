"""A partition's sent mark after the consumer group is deleted (generations restart at 1).

The partition's last owner stops cleanly (its sent mark is written) and its saga's records
shrink to expiry markers, which hold no batch number: the mark is then the partition's
highest number. The group is deleted. The next owner (generation 1) must number its batches
above the mark: killed after a batch's records and before its sends, that batch is the
one its successor re-sends. Numbered under the mark, it would be taken for "sent in full"
and the events of the local result it applied never sent (a hole in the saga's ``seq``).
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import DeleteGroupsRequest

from coordinator import SagaClient
from coordinator._routing import partition_for
from tests.integration.stack import Lifecycle, OrderStack, order
from tests.integration.test_store_retention import saga_record, until

pytestmark = pytest.mark.integration

RETENTION = {"SAGA_RETENTION": "PT1S"}


async def delete_group(bootstrap: str, group: str) -> None:
    """Delete the consumer group, once its last member has left."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        node = await admin.find_coordinator(group)
        code = -1
        for _ in range(60):  # the group must be empty
            response = await admin._send_request_to_node(node, DeleteGroupsRequest([group]))
            [(_, code)] = response.results
            if code == 0:
                return
            await asyncio.sleep(1)
        raise AssertionError(f"consumer group {group} not deleted: error code {code}")
    finally:
        await admin.close()


async def shrunk(stack: OrderStack, saga_id: str) -> None:
    """Wait until the saga's record is an expiry marker (no steps)."""

    async def marker() -> bool:
        code, view = await saga_record(stack, saga_id)
        return code == 200 and not view.get("steps")

    await until(marker, f"saga {saga_id} to shrink to an expiry marker", timeout=60)


async def test_after_a_group_reset_a_killed_owners_last_batch_is_re_sent(
    stack: OrderStack,
) -> None:
    settings = stack.settings()
    first, later, i = stack.prefix + "-a", stack.prefix, 0
    while partition_for(first, stack.partitions) != partition_for(later, stack.partitions):
        first, i = f"{stack.prefix}-a{i}", i + 1  # both sagas on one partition
    partition = partition_for(later, stack.partitions)
    w0 = stack.coordinator(name="w0", env=RETENTION)
    async with (
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
    ):
        await client.start("order_fulfillment", order("h-first"), saga_id=first)
        await life.wait([first], statuses={"saga_completed"}, timeout=120)
        await shrunk(stack, first)
        w0.stop()  # graceful: the partition's sent mark
        assert f" {partition}: " in "".join(
            line for line in w0.output().splitlines() if "sent marks written" in line
        )
        await delete_group(stack.bootstrap, settings.app_id)

        # w2 is killed right after the record applying a step's local result, before
        # that batch's sends (a slow inventory step: its result comes in a batch alone)
        await stack.admin("POST", "/admin/knobs", {"latency_ms": {"inventory": 2500}})
        crashing = stack.coordinator(
            name="w2", env={**RETENTION, "SAGA_FAULT_KILL_AFTER_RECORDS": "3"}
        )
        await client.start("order_fulfillment", order("h-later"), saga_id=later)
        await crashing.output_ready("SAGA_FAULT_KILL_AFTER_RECORDS reached", timeout=120)
        crashing.wait(30)
        await stack.admin("POST", "/admin/knobs", {"latency_ms": {}})
        w3 = stack.coordinator(name="w3", env=RETENTION)
        await life.wait([later], statuses={"saga_completed"}, timeout=180)
        events = life.unique(later)
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), (
            f"a hole in {later}'s events (lost sends): {[(e.seq, e.type) for e in events]}"
        )
        assert f"inbox partition {partition}: re-sending the outbox of 1 sagas" in w3.output()
