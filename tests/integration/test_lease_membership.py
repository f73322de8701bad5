"""The membership lease's hook on a real consumer group (``Membership.watch``).

The unit tests (tests/unit/coordinator/test_lease_aiokafka.py) pin aiokafka's code
paths; this one shows them carrying a real broker's answers: the first SyncGroup starts
the lease with the generation aiokafka took, heartbeats keep renewing it, and leaving the
group ends it.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer

from coordinator._lease import Membership
from tests.integration.listener_kit import create_topic

pytestmark = pytest.mark.integration


async def test_a_real_group_member_holds_the_lease_while_it_heartbeats(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.lease"
    await create_topic(kafka_bootstrap, topic, {})
    lease = Membership(6.0, 1.0, rebalance_timeout=60.0)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{topic_prefix}-lease",
        session_timeout_ms=6000,
        rebalance_timeout_ms=60000,
        heartbeat_interval_ms=300,
    )
    lease.watch(consumer._client)  # before it starts, as the coordinator's consumer thread
    await consumer.start()  # returns once assigned
    try:
        generation = consumer._coordinator.generation
        assert generation > 0 and lease.confirmed[1] == generation
        lease.assigned = generation
        assert lease.valid(), "the SyncGroup answered OK started it"
        first = lease.confirmed[0]
        deadline = time.monotonic() + 10
        while lease.confirmed[0] == first:  # a heartbeat renews it
            assert time.monotonic() < deadline, "no heartbeat renewed the lease"
            await asyncio.sleep(0.1)
        assert lease.valid() and lease.confirmed[1] == generation
    finally:
        await consumer.stop()  # leaves the group
    assert not lease.valid(), "a worker that left may own nothing"
