"""A PostgreSQL outage stalls the listener worker; it neither crashes nor loses events.

Uses a private PostgreSQL cluster (``pg_cluster.PgCluster``), never the shared server.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from listeners._migrations import upgrade
from tests.integration.listener_kit import (
    ListenerWorker,
    check_statuses,
    count_rows,
    produce,
    wait_applied,
)
from tests.integration.pg_cluster import PgCluster
from tests.integration.polling import eventually
from tests.listener_events import mixed_sagas

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


async def test_database_outage_stalls_then_catches_up(
    kafka_bootstrap: str, topic_prefix: str, cluster: PgCluster
) -> None:
    upgrade(cluster.url)
    sagas = mixed_sagas(80, prefix=topic_prefix)
    before = {k: v for i, (k, v) in enumerate(sagas.items()) if i < 40}
    during = {k: v for i, (k, v) in enumerate(sagas.items()) if i >= 40}
    count = lambda group: sum(len(events) for _, events in group.values())  # noqa: E731
    worker = ListenerWorker(
        bootstrap=kafka_bootstrap, prefix=topic_prefix, database_url=cluster.url
    )
    try:
        worker.start()
        await produce(
            kafka_bootstrap, worker.lifecycle_topic, [e for _, ev in before.values() for e in ev]
        )
        wait_applied(cluster.url, count(before), worker)

        cluster.stop()
        await produce(
            kafka_bootstrap, worker.lifecycle_topic, [e for _, ev in during.values() for e in ev]
        )
        eventually(
            lambda: "database unavailable" in worker.output(),
            timeout=60,
            what="the worker to report the outage and retry",
        )
        assert worker.alive(), worker.output()[-3000:]
        stalled = worker.get("/listeners/stats").json()
        assert stalled["db_retries"] >= 1
        assert stalled["applied"] == count(before)

        cluster.start()
        wait_applied(cluster.url, count(sagas), worker)
        check_statuses(cluster.url, sagas)
        assert count_rows(cluster.url, "order_events") == count(sagas)  # each applied once
        stats = worker.get("/listeners/stats").json()
        assert stats["applied"] == count(sagas)
        assert stats["dead_letters"] == 0 and stats["isolated_batches"] == 0
        assert worker.alive()
        assert worker.stop() == 0, worker.output()[-3000:]
    finally:
        worker.close()
