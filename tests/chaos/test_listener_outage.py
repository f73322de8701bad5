"""The listener's database is down for a while under load (full run only): the listener
stalls, loses nothing, and its rows agree with the coordinator once it is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.chaos.conftest import ClusterFactory
from tests.chaos.scenario import SIZES, Run, scenario
from tests.chaos.workload import plan, submit
from tests.integration.pg_cluster import PgCluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.chaos,
    pytest.mark.chaos_full_only,  # not collected by the reduced run (make test): no skip
]


@pytest.fixture
def pg() -> Iterator[PgCluster]:
    server = PgCluster()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.mark.timeout(SIZES.listener_outage * 3 + SIZES.settle + 240)
async def test_listener_database_down(chaos_cluster: ClusterFactory, pg: PgCluster) -> None:
    cluster = chaos_cluster(database_url=pg.url)
    await cluster.start()
    window = SIZES.listener_outage * 2
    async with scenario(cluster, f"listener db down {SIZES.listener_outage:.0f}s") as run:
        sagas = plan(cluster.prefix, int(window * 5))
        submitting = asyncio.create_task(
            submit(run.client, sagas, run.submitted, interval=window / len(sagas))
        )
        await asyncio.sleep(window / 4)
        await asyncio.to_thread(pg.stop)
        run.fault("listener db down")
        await asyncio.sleep(SIZES.listener_outage)
        await asyncio.to_thread(pg.start)
        recovered_in = await caught_up(run)
        await submitting
        await run.finish()
        run.verdict.faults[0].measured = True
        run.verdict.faults[0].recovered_in = recovered_in


async def caught_up(run: Run, timeout: float = 90.0) -> float | None:
    """Seconds from the database's return until the listener's rows hold the last event of
    every saga finished by then, or None if they never did within ``timeout``."""
    back = time.monotonic()
    done = [saga_id for saga_id in run.submitted.sagas if saga_id in run.life.terminal_seen]
    want = {saga_id: max(e.seq for e in run.life.events[saga_id]) for saga_id in done}
    while time.monotonic() - back < timeout:
        rows = await asyncio.to_thread(run.cluster.listener_rows, done)
        if all(rows.get(saga_id, ("", 0))[1] >= seq for saga_id, seq in want.items()):
            return time.monotonic() - back
        await asyncio.sleep(0.5)
    return None
