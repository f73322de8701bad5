"""SIGKILL the coordinator workers in turn while sagas stream in; restart each."""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos.conftest import ClusterFactory
from tests.chaos.scenario import SIZES, scenario
from tests.chaos.workload import plan, submit

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


#: batches of saga records a self-killing worker acks before it SIGKILLs itself
SELF_KILL_AFTER = 5
#: how long an armed worker may take to start (it is not waited for: it may die first)
SELF_KILL_STARTUP = 30.0


@pytest.mark.timeout(SIZES.kill_window + SIZES.kills * 60 + SIZES.settle + 240)
async def test_sigkill_each_worker_in_turn(chaos_cluster: ClusterFactory) -> None:
    """Workers a and b are SIGKILLed in turn and restarted. The second of every three
    kills is the worker's own: restarted with ``SAGA_FAULT_KILL_AFTER_RECORDS``, it
    SIGKILLs itself right after a batch of saga records is acked, before anything derived
    from them is sent (the window the durable order of effects exists for); if it has not
    died in time (an engine without the knob), it is SIGKILLed from outside."""
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
        name = names[0]
        for k in range(SIZES.kills):
            phase = k % 3
            if phase == 1:  # the worker armed at the last kill dies by itself, mid-stream
                worker = cluster.workers[name]
                for _ in range(int((gap + SELF_KILL_STARTUP) * 10)):
                    if not worker.alive():
                        break
                    await asyncio.sleep(0.1)
                died = not worker.alive()
                cluster.kill(name)
                run.fault(f"{'self-kill' if died else 'kill'} {name[-1]}")
                await asyncio.to_thread(cluster.restart, name)
                await asyncio.sleep(gap / 2)
                continue
            await asyncio.sleep(gap / 2)
            name = names[(k // 3 + phase // 2) % len(names)]
            cluster.kill(name)
            run.fault(f"kill {name[-1]}")
            armed = phase == 0 and k + 1 < SIZES.kills
            env = {"SAGA_FAULT_KILL_AFTER_RECORDS": str(SELF_KILL_AFTER)} if armed else None
            await asyncio.to_thread(cluster.restart, name, env=env, wait=not armed)
            if not armed:
                await asyncio.sleep(gap / 2)
        await submitting
        await run.finish()
