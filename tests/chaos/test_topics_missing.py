"""Workers started on a fresh prefix, before any of their topics exist: each must create
(or wait for) every topic it consumes, never sit idle on an "ignored missing topic"."""

from __future__ import annotations

import pytest

from tests.chaos.conftest import ClusterFactory
from tests.chaos.oracle import Verdict
from tests.chaos.scenario import SIZES, scenario
from tests.chaos.workload import plan, submit

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

SETTLE = 25.0  # no fault here: sagas of an idle-free cluster finish in seconds


@pytest.mark.timeout(SIZES.topic_starts * (SETTLE + 90) + 60)
async def test_workers_started_before_their_topics(
    chaos_cluster: ClusterFactory, topic_prefix: str
) -> None:
    name = f"start before topics x{SIZES.topic_starts}"
    verdict = Verdict(name)  # its clock starts now: the table shows all rounds
    for n in range(SIZES.topic_starts):
        cluster = chaos_cluster(prefix=f"{topic_prefix}r{n}", workers=SIZES.topic_workers)
        await cluster.start(topics=False)  # nothing has created a topic of this prefix yet
        last = n == SIZES.topic_starts - 1
        async with scenario(cluster, name, verdict=verdict, last=last) as run:
            await submit(run.client, plan(cluster.prefix, SIZES.topic_sagas), run.submitted)
            await run.finish(settle=SETTLE)
        cluster.close()
