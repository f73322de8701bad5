"""A worker expelled while its consumer group is deleted works on in the group created anew.

Generations grow only within one incarnation of a group: deleted while empty (by an
operator, or by the broker's cleanup of an empty group without committed offsets), it is
created again at generation 1. The membership lease (``coordinator._lease``) of a worker
expelled at generation 1 must hold for generation 1 of the new group: were it to ignore
every generation up to the one it lost, that worker would abandon every batch for good
(review-fence F1).
"""

from __future__ import annotations

import os
import signal

import pytest

from coordinator import SagaClient
from infra.processes import free_port
from tests.integration.effect_sagas import DEFINITIONS
from tests.integration.stack import Lifecycle, OrderStack
from tests.integration.test_paused_worker import ASSIGNED, env, until
from tests.integration.test_recovery_group_reset import delete_group
from tests.integration.test_store_retention import bare, spread  # noqa: F401

pytestmark = pytest.mark.integration


async def test_a_worker_expelled_while_its_group_is_deleted_runs_sagas_after_it_rejoins(
    bare: OrderStack,  # noqa: F811
) -> None:
    stack = bare
    settings = stack.settings()
    a = stack.coordinator(
        name="a", definitions=DEFINITIONS, env=env(stack, "a"), web_port=free_port()
    )
    before = spread(f"{stack.prefix}-b", stack.partitions, per_partition=1)
    after = spread(f"{stack.prefix}-a", stack.partitions, per_partition=1)
    async with (
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
    ):
        for saga_id in before:
            await client.start("traced", {}, saga_id=saga_id)
        await life.wait(before, statuses={"saga_completed"}, timeout=90)
        await until(a, "generation 1 ", 1)  # A was a member of generation 1
        os.kill(a.pid, signal.SIGSTOP)  # expelled once its session expires: the group empties
        try:
            await delete_group(stack.bootstrap, settings.app_id)
        finally:
            os.kill(a.pid, signal.SIGCONT)
        await until(a, ASSIGNED, 2)  # rejoined: generation 1 of the group created anew
        for saga_id in after:
            await client.start("traced", {}, saga_id=saga_id)
        await life.wait(after, statuses={"saga_completed"}, timeout=60)
