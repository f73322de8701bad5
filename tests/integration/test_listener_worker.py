"""The listener worker end to end: real broker, real databases, restarts, duplicates, replay.

200 order sagas with mixed outcomes are delivered with duplicates and garbage, across a
crash (SIGKILL) and restart of the worker; the business state must come out exact on
SQLite and on PostgreSQL, queryable over HTTP and the CLI, and a replay of the topic
into a fresh database must give an identical ``orders`` table.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path
from typing import Any

import pytest

from tests.integration.listener_kit import (
    ListenerWorker,
    check_statuses,
    orders_table,
    produce,
    read_dead_letters,
    sqlite_url,
    wait_applied,
)
from tests.listener_events import EXPECTED, mixed_sagas
from tests.services import fresh_database

pytestmark = pytest.mark.integration

GARBAGE = [b"not json", b'{"type": "saga_started"}', b""]


@pytest.fixture(params=["sqlite", "postgresql"])
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(live database URL, empty database URL for the replay), of one backend."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path, "live.db"), sqlite_url(tmp_path, "replayed.db")
        return
    live = request.getfixturevalue("pg_url")
    replayed = fresh_database(request.getfixturevalue("postgres_server"))
    try:
        yield live, next(replayed)
    finally:
        replayed.close()


def _interleaved(sagas: dict[str, tuple[str, list[Any]]]) -> list[Any]:
    """Events of all sagas interleaved (each saga's own order kept)."""
    columns = zip_longest(*(events for _, events in sagas.values()))
    return [event for row in columns for event in row if event is not None]


async def test_business_state_survives_duplicates_crash_and_replay(
    kafka_bootstrap: str, topic_prefix: str, databases: tuple[str, str]
) -> None:
    url, replay_url = databases
    sagas = mixed_sagas(200, prefix=topic_prefix)
    events = _interleaved(sagas)
    total = len(events)
    first, second, third = (
        events[: total * 4 // 10],
        events[total * 4 // 10 : total * 7 // 10],
        events[total * 7 // 10 :],
    )
    worker = ListenerWorker(bootstrap=kafka_bootstrap, prefix=topic_prefix, database_url=url)
    try:
        refused = worker.cli("worker")
        assert refused.proc is not None and refused.proc.returncode == 2
        assert "python -m listeners migrate" in refused.output()
        migrated = worker.cli("migrate")
        assert migrated.proc is not None and migrated.proc.returncode == 0, migrated.output()

        worker.start()
        await produce(kafka_bootstrap, worker.lifecycle_topic, first, raw=GARBAGE)
        wait_applied(url, len(first), worker)
        worker.kill()  # a crash: applied batches whose offsets were not committed come again

        duplicates = random.Random(1).sample(first, len(first) // 5)
        await produce(kafka_bootstrap, worker.lifecycle_topic, [*second, *duplicates])
        worker.start()
        await produce(kafka_bootstrap, worker.lifecycle_topic, [*third, *first])
        wait_applied(url, total, worker)

        check_statuses(url, sagas)
        letters = await read_dead_letters(kafka_bootstrap, f"{topic_prefix}.deadletters", 3)
        # At least once: a garbage record read before the crash may be dead-lettered twice,
        # but always with its source offset, so the distinct records are exactly the garbage.
        distinct = {(letter.partition, letter.offset): letter.value() for letter in letters}
        assert sorted(distinct.values()) == sorted(GARBAGE)
        assert all(letter.reason and letter.agent for letter in letters)

        # Queries: HTTP on the worker, and the CLI.
        first_id = next(iter(sagas))
        outcome = sagas[first_id][0]
        order = worker.get("/orders/order-0000").json()
        assert order["status"] == EXPECTED[outcome].status
        assert [e["seq"] for e in order["timeline"]] == list(range(1, len(sagas[first_id][1]) + 1))
        assert worker.get("/orders/no-such-order").status_code == 404
        listed = worker.get("/orders?status=cancelled&limit=1000").json()["orders"]
        cancelled = [s for s, (o, _) in sagas.items() if EXPECTED[o].status == "cancelled"]
        assert sorted(o["saga_id"] for o in listed) == sorted(cancelled)
        assert worker.get("/orders?status=bogus").status_code == 400
        shown = worker.cli("order-status", "order-0005")
        assert shown.proc is not None and shown.proc.returncode == 0, shown.output()
        assert "status:   paid" in shown.output() and "shipping (ship)" in shown.output()

        assert worker.stop() == 0, worker.output()[-3000:]

        replayed = worker.cli("replay", "--into", replay_url, "--no-swap", timeout=180)
        assert replayed.proc is not None and replayed.proc.returncode == 0, replayed.output()
        assert "dead letters 3" in replayed.output()
        assert orders_table(replay_url) == orders_table(url)
    finally:
        worker.close()
