"""SIGKILL the coordinator workers in turn while sagas stream in; restart each."""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos.conftest import ClusterFactory
from tests.chaos.scenario import SIZES, scenario
from tests.chaos.workload import plan, submit

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@pytest.mark.timeout(SIZES.kill_window + SIZES.kills * 60 + SIZES.settle + 240)
async def test_sigkill_each_worker_in_turn(chaos_cluster: ClusterFactory) -> None:
    cluster = chaos_cluster()
    await cluster.start()
    # some latency keeps every step kind in flight when a kill lands
    await cluster.knobs(latency_ms={"payments": 50, "shipping": 50})
    names = list(cluster.ports)
    gap = SIZES.kill_window / (SIZES.kills + 1)
    async with scenario(cluster, f"SIGKILL workers x{SIZES.kills}") as run:
        sagas = plan(cluster.prefix, SIZES.kill_sagas)
        submitting = asyncio.create_task(
            submit(run.client, sagas, run.submitted, interval=SIZES.kill_window / len(sagas))
        )
        for k in range(SIZES.kills):
            await asyncio.sleep(gap / 2)
            name = names[k % len(names)]
            cluster.kill(name)
            run.fault(f"kill {name[-1]}")
            await asyncio.to_thread(cluster.restart, name)
            await asyncio.sleep(gap / 2)
        await submitting
        await run.finish()
