"""SIGTERM and SIGKILL the Kafka broker mid-stream; restart it on the same data dir.

Uses a broker of its own on free ports (never the shared one), started by
``infra.kafka.up`` and restarted with ``keep_data=True``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from infra import kafka
from infra.processes import free_port
from tests.chaos.conftest import ClusterFactory
from tests.chaos.scenario import SIZES, scenario
from tests.chaos.workload import plan, submit

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


DOWN_FOR = 3.0  # seconds the broker stays down


@pytest.fixture
def own_broker(kafka_bootstrap: str) -> Iterator[kafka.BrokerConfig]:
    """A private single-node broker (``kafka_bootstrap`` only proves Kafka can run here)."""
    cfg = kafka.BrokerConfig(port=free_port(), controller_port=free_port())
    kafka.up(cfg)
    try:
        yield cfg
    finally:
        kafka.down(cfg)


@pytest.mark.timeout(SIZES.broker_rounds * 240 + SIZES.settle + 240)
async def test_broker_sigterm_and_sigkill(
    chaos_cluster: ClusterFactory, own_broker: kafka.BrokerConfig
) -> None:
    cluster = chaos_cluster(bootstrap=own_broker.bootstrap)
    await cluster.start()
    await cluster.knobs(latency_ms={"payments": 50, "shipping": 50})
    faults = [("SIGTERM", False), ("SIGKILL", True)] * SIZES.broker_rounds
    name = f"broker SIGTERM+SIGKILL x{SIZES.broker_rounds}"
    async with scenario(cluster, name) as run:
        sagas = plan(cluster.prefix, SIZES.broker_sagas)
        per_phase = len(sagas) // (len(faults) + 1)
        paused = asyncio.Event()
        interval = 0.1
        submitting = asyncio.create_task(
            submit(run.client, sagas, run.submitted, interval=interval, paused=paused)
        )
        for label, crash in faults:
            await asyncio.sleep(per_phase * interval)
            paused.set()
            if crash:
                await asyncio.to_thread(kafka.kill, own_broker)
            else:
                await asyncio.to_thread(kafka.down, own_broker, keep_data=True)
            run.fault(f"broker {label}")
            await asyncio.sleep(DOWN_FOR)
            await asyncio.to_thread(kafka.up, own_broker, keep_data=True)
            paused.clear()
        await submitting
        await run.finish()
