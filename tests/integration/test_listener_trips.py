"""The example non-order listener (trips) end to end on the real broker and databases.

Declared in examples/trips, migrated by the CLI, run as a worker process, fed trip sagas
(one trip retried as a second saga, events of a type this coordinator does not model,
1 MB and 5 MB records, garbage), queried by CLI and HTTP, then rebuilt by ``replay``
into a fresh database that is swapped in: the result must be identical.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import zip_longest
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.listener_kit import (
    ListenerWorker,
    count_rows,
    create_topic,
    produce,
    read_dead_letters,
    sqlite_url,
    table_rows,
    wait_applied,
)
from tests.trip_events import trip_saga

pytestmark = pytest.mark.integration

TRIPS = "examples.trips:trips"
OUTCOMES = ("completed", "hotel_failed", "in_flight")
BIG = [b"{" + b"x" * (1024 * 1024), b"y" * (5 * 1024 * 1024)]
GARBAGE = [b"not json", b'{"type": "trip_note"}']


@pytest.fixture(params=["sqlite", "postgresql"])
def live_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path, "trips.db")
        return
    url = request.getfixturevalue("pg_url")
    yield url
    _drop_replay_leftovers(url)


def _drop_replay_leftovers(url: str) -> None:
    """Drop the databases a swap left behind on the server (the old live one)."""
    parsed = sa.make_url(url)
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            names = conn.execute(
                sa.text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                {"p": f"{parsed.database}_%replay_%"},
            ).scalars()
            for name in list(names):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _sagas() -> dict[str, list[Any]]:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    sagas = {
        f"trip-saga-{i}": trip_saga(
            f"trip-saga-{i}",
            f"trip-{i}",
            OUTCOMES[i % 3],
            start=t0 + timedelta(minutes=i),
            unknown_type=i % 4 == 0,
        )
        for i in range(30)
    }
    # trip-0 is booked again as a new saga after its first one: that one wins.
    sagas["trip-saga-0-again"] = trip_saga(
        "trip-saga-0-again", "trip-0", "completed", start=t0 + timedelta(hours=2)
    )
    sagas["trip-saga-0"] = trip_saga(
        "trip-saga-0", "trip-0", "hotel_failed", start=t0, unknown_type=True
    )
    return sagas


def _interleaved(sagas: dict[str, list[Any]]) -> list[Any]:
    columns = zip_longest(*sagas.values())
    return [event for row in columns for event in row if event is not None]


def _snapshot(url: str) -> tuple[list[Any], list[Any]]:
    return table_rows(url, "trips", "saga_id"), table_rows(url, "trips_timeline", "saga_id, seq")


async def test_trips_listener_declared_migrated_run_queried_and_replayed(
    kafka_bootstrap: str, topic_prefix: str, live_url: str
) -> None:
    sagas = _sagas()
    events = _interleaved(sagas)
    worker = ListenerWorker(
        bootstrap=kafka_bootstrap, prefix=topic_prefix, database_url=live_url, listeners=[TRIPS]
    )
    # The coordinator creates the lifecycle topic; this one accepts records up to 8 MB.
    await create_topic(
        kafka_bootstrap, worker.lifecycle_topic, {"max.message.bytes": str(8 * 1024 * 1024)}
    )
    try:
        refused = worker.cli("worker", TRIPS)
        assert refused.proc is not None and refused.proc.returncode == 2
        assert "error: listener 'trips'" in refused.output()
        assert "python -m listeners migrate" in refused.output()
        migrated = worker.cli("migrate", TRIPS)
        assert migrated.proc is not None and migrated.proc.returncode == 0, migrated.output()

        worker.start()
        half = len(events) // 2
        await produce(kafka_bootstrap, worker.lifecycle_topic, events[:half], raw=BIG)
        await produce(kafka_bootstrap, worker.lifecycle_topic, events[half:], raw=GARBAGE)
        wait_applied(live_url, len(events), worker, table="trips_timeline")

        # The oversized records and the garbage are dead letters; the worker went on.
        letters = await read_dead_letters(kafka_bootstrap, f"{topic_prefix}.deadletters", 4)
        kinds = sorted({(x.offset, x.partition): x.error_type for x in letters}.values())
        assert kinds == ["RecordTooLarge", "RecordTooLarge", "ValidationError", "ValidationError"]
        stats = worker.get("/listeners/stats").json()
        assert stats["applied"] == len(events) and stats["dead_letters"] >= 4

        # HTTP: the entity, its history, lists with filters, errors.
        trip = worker.get("/trips/trip-0").json()
        assert (trip["saga_id"], trip["status"]) == ("trip-saga-0-again", "completed")
        assert trip["fields"]["flight"] == "R0" and trip["fields"]["destination"] == "Lisbon"
        assert [h["saga_id"] for h in trip["history"]] == ["trip-saga-0"]
        assert trip["history"][0]["status"] == "compensated"
        assert len(trip["history"][0]["timeline"]) == len(sagas["trip-saga-0"])
        assert "trip_note" in [e["type"] for e in trip["history"][0]["timeline"]]
        in_flight = worker.get("/trips/trip-2").json()
        assert (in_flight["status"], in_flight["current_service"]) == ("running", "hotels")
        hotels = worker.get("/trips?current_service=hotels&limit=100").json()["trips"]
        assert sorted(t["business_key"] for t in hotels) == sorted(
            f"trip-{i}" for i in range(30) if i % 3 == 2
        )
        compensated = worker.get("/trips?status=compensated").json()["trips"]
        # trip-0's first saga was compensated too, but its newest saga completed.
        assert sorted(t["business_key"] for t in compensated) == sorted(
            f"trip-{i}" for i in range(30) if i % 3 == 1
        )
        # A page the listener added itself (@trips.page).
        per_status = worker.get("/trips-to/Lisbon").json()
        assert per_status == {"completed": 10, "compensated": 11, "running": 10}  # sagas
        assert worker.get("/trips/no-such-trip").status_code == 404
        assert worker.get("/trips?status=paid").status_code == 400
        assert worker.get("/trips?colour=red").status_code == 400

        # CLI: the same answers.
        shown = worker.cli("get", TRIPS, "trip-0", "--json")
        assert shown.proc is not None and shown.proc.returncode == 0, shown.output()
        assert '"status": "completed"' in shown.output()
        listed = worker.cli("list", TRIPS, "--where", "status=compensated", "--limit", "100")
        assert listed.proc is not None and listed.proc.returncode == 0
        assert listed.output().count('"saga_type": "trip_booking"') == 10

        # A swap while the worker runs is refused before anything is built.
        busy = worker.cli("replay", TRIPS)
        assert busy.proc is not None and busy.proc.returncode == 2
        assert "stop them before a swap" in busy.output()

        before = _snapshot(live_url)
        assert len(before[0]) == len(sagas)
        assert worker.stop() == 0, worker.output()[-3000:]

        replayed = worker.cli("replay", TRIPS, timeout=180)
        assert replayed.proc is not None and replayed.proc.returncode == 0, replayed.output()
        assert "swapped:" in replayed.output() and "dead letters 4" in replayed.output()
        assert _snapshot(live_url) == before  # the rebuilt database, now under the live name

        # The worker runs on the swapped-in database and goes on from its offsets.
        late = trip_saga("trip-saga-late", "trip-late", "completed")
        worker.start()
        await produce(kafka_bootstrap, worker.lifecycle_topic, late)
        wait_applied(live_url, len(events) + len(late), worker, table="trips_timeline")
        assert worker.get("/trips/trip-late").json()["status"] == "completed"
        assert worker.stop() == 0
    finally:
        worker.close()


async def test_replay_refuses_a_topic_that_lost_its_beginning(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

    live = sqlite_url(tmp_path, "trips.db")
    worker = ListenerWorker(
        bootstrap=kafka_bootstrap, prefix=topic_prefix, database_url=live, listeners=[TRIPS]
    )
    await create_topic(kafka_bootstrap, worker.lifecycle_topic, {})
    events = [e for i in range(8) for e in trip_saga(f"s{i}", f"trip-{i}", "completed")]
    await produce(kafka_bootstrap, worker.lifecycle_topic, events)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(worker.lifecycle_topic, 0): RecordsToDelete(1)})
    finally:
        await admin.close()
    try:
        into = sqlite_url(tmp_path, "rebuilt.db")
        refused = worker.cli("replay", TRIPS, "--into", into, "--no-swap")
        assert refused.proc is not None and refused.proc.returncode == 2
        last = refused.output().strip().splitlines()[-1]
        assert last.startswith("error: lifecycle topic") and "--force" in last
        assert not (tmp_path / "rebuilt.db").exists()

        forced = worker.cli("replay", TRIPS, "--into", into, "--no-swap", "--force")
        assert forced.proc is not None and forced.proc.returncode == 0, forced.output()
        assert "not swapped" in forced.output()
        rows = table_rows(into, "trips_timeline", "saga_id, seq")
        assert len(rows) == len(events) - 1
    finally:
        worker.close()


async def test_trips_from_a_real_coordinator(
    kafka_bootstrap: str, topic_prefix: str, pg_url: str, tmp_path: Path
) -> None:
    """Real lifecycle events: the trip saga run by a coordinator worker, listened to by a
    worker running two listeners with a database each (trips: PostgreSQL, orders: SQLite)."""
    from coordinator import SagaClient
    from tests.integration.polling import eventually
    from tests.integration.stack import OrderStack

    stack = OrderStack(kafka_bootstrap, topic_prefix, tmp_path / "coordinator")
    orders_url = sqlite_url(tmp_path, "orders.db")
    worker = ListenerWorker(
        bootstrap=kafka_bootstrap,
        prefix=topic_prefix,
        database_url=orders_url,
        listeners=[TRIPS, "orders"],
    )
    worker.env["LISTENER_DATABASE_URLS"] = json.dumps({"trips": pg_url})

    def trip(key: str, status: str) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def arrived() -> bool:
            assert worker.alive(), worker.output()[-3000:]
            response = worker.get(f"/trips/{key}")
            found.update(response.json() if response.status_code == 200 else {})
            return found.get("status") == status

        eventually(arrived, timeout=90, what=f"trip {key} {status}: {found}")
        return found

    try:
        migrated = worker.cli("migrate", TRIPS, "orders")
        assert migrated.proc is not None and migrated.proc.returncode == 0, migrated.output()
        assert "listener 'orders': database sqlite:///" in migrated.output()
        assert "listener 'trips': database postgresql+psycopg://" in migrated.output()
        stack.coordinator(definitions="examples.trips.saga:TRIP_SAGA")
        worker.start()
        async with SagaClient(stack.settings()) as client:
            for saga_id, key, destination in [("t1", "T-1", "Lisbon"), ("t2a", "T-2", "Nowhere")]:
                request = {"trip_id": key, "destination": destination}
                await client.start("trip_booking", request, saga_id=saga_id, business_key=key)
            t1 = trip("T-1", "completed")
            assert (t1["fields"]["flight"], t1["fields"]["hotel"]) == (
                "book_flight-T-1",
                "book_hotel-T-1",
            )
            assert t1["fields"]["confirmed_at"] and t1["current_service"] is None
            refused = trip("T-2", "compensated")
            assert refused["fields"]["flight"] is None  # booked, then undone
            assert "no hotel in Nowhere" in refused["last_error"]
            # The traveller tries again: a new saga for the same trip.
            request = {"trip_id": "T-2", "destination": "Porto"}
            await client.start("trip_booking", request, saga_id="t2b", business_key="T-2")
            again = trip("T-2", "completed")
        assert again["saga_id"] == "t2b" and again["fields"]["destination"] == "Porto"
        assert [(h["saga_id"], h["status"]) for h in again["history"]] == [("t2a", "compensated")]
        undone = [
            e["step"]
            for e in again["history"][0]["timeline"]
            if e["type"] == "compensation_succeeded"
        ]
        assert undone == ["book_flight"]
        assert worker.get("/orders?status=completed").json()["orders"] == []
        assert count_rows(orders_url, "order_events") == 0  # trip events are not its type
        assert worker.get("/listeners/stats").json()["ignored"] > 0
        assert worker.stop() == 0, worker.output()[-3000:]
    finally:
        worker.close()
        stack.close()
