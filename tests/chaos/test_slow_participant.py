"""A participant slower than the step timeout on every attempt: its effect lands after
the last attempt gave up, so the step is *maybe applied* and must be compensated."""

from __future__ import annotations

import pytest

from tests.chaos.conftest import ClusterFactory
from tests.chaos.sagas import PAYMENT_LATENCY_MS
from tests.chaos.scenario import SIZES, scenario
from tests.chaos.workload import SLOW_PAYMENT, plan, submit

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@pytest.mark.timeout(SIZES.settle + 240)
async def test_participant_slower_than_the_step_timeout(chaos_cluster: ClusterFactory) -> None:
    cluster = chaos_cluster(definitions="tests.chaos.sagas:ORDER_SAGA_SHORT_PAYMENT_TIMEOUT")
    await cluster.start(knobs={"latency_ms": {"payments": PAYMENT_LATENCY_MS}})
    async with scenario(cluster, "slow participant") as run:
        sagas = plan(cluster.prefix, SIZES.slow_sagas, kinds=(SLOW_PAYMENT,))
        await submit(run.client, sagas, run.submitted, interval=0.2)
        await run.finish()
