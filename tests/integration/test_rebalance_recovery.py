"""A worker that keeps partitions across a clean rebalance recovers them and runs on.

At a clean revoke the worker writes its partitions' sent marks to the changelog; the
partitions it keeps are then restored (Faust's table recovery) from that changelog, and
only a finished restore lets the worker apply their inbox again. Here workers join and
leave a running group several times; after every rebalance a saga started on each
partition must complete. Each recovery lags after its seek, as on a loaded machine: a
fetch pending since before the rebalance used to consume the changelog records there, and
the restore then waited for ever (``_faust_app.Active``).
"""

from __future__ import annotations

import pytest

from coordinator import SagaClient
from infra.processes import Process, free_port
from tests.integration.stack import Lifecycle, OrderStack, order
from tests.integration.test_shell import spread

pytestmark = pytest.mark.integration

ROUNDS = 3
#: each recovery lags after its seek (``fault_recovery_seek_lag``), as on a loaded machine:
#: the window in which a fetch pending since before the rebalance can read the changelog
LAG = {"SAGA_FAULT_RECOVERY_SEEK_LAG": "PT0.5S"}


async def test_partitions_kept_across_clean_rebalances_are_restored_and_run_on(
    stack: OrderStack,
) -> None:
    settings = stack.settings()
    first = stack.coordinator(name="first", env=LAG)
    workers: list[Process] = [first]

    async def every_partition_runs(client: SagaClient, tag: str) -> None:
        saga_ids = spread(f"{stack.prefix}-{tag}", stack.partitions, per_partition=1)
        async with Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life:
            for saga_id in saga_ids:
                await client.start("order_fulfillment", order(saga_id), saga_id=saga_id)
            try:
                await life.wait(saga_ids, statuses={"saga_completed"}, timeout=75)
            except AssertionError as exc:
                logs = "\n".join(f"--- {w.name}\n{w.output()[-6000:]}" for w in workers)
                raise AssertionError(f"{exc}\n{logs}") from None

    async with SagaClient(settings) as client:
        await every_partition_runs(client, "start")
        for round_ in range(ROUNDS):
            joiner = stack.coordinator(name=f"joiner{round_}", web_port=free_port(), env=LAG)
            workers.append(joiner)  # a rebalance: the first worker keeps half
            await every_partition_runs(client, f"joined{round_}")
            joiner.stop()  # another: the first keeps its half and takes the rest
            await every_partition_runs(client, f"left{round_}")
    for worker in workers:
        assert "No event received for active tp" not in worker.output(), worker.name
