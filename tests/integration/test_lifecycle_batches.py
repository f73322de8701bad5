"""Lifecycle records on the real broker: a saga's events of one coordinator batch travel
as one record (``SAGA_LIFECYCLE_FORMAT=batch``, the default) or one record per event
(``single``), and a listener worker on PostgreSQL builds the same business state from
either."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coordinator import SagaClient
from tests.integration.listener_kit import ListenerWorker, sqlite_url
from tests.integration.polling import eventually
from tests.integration.stack import Lifecycle, OrderStack

pytestmark = pytest.mark.integration

TRIPS = "examples.trips:trips"


@pytest.mark.parametrize("form", ["batch", "single"])
async def test_a_saga_s_events_of_one_batch_are_one_record_and_the_listener_is_right(
    kafka_bootstrap: str, topic_prefix: str, pg_url: str, tmp_path: Path, form: str
) -> None:
    """The trip saga's steps run inline, so a start is applied in one inbox batch: with
    ``batch`` each saga's whole lifecycle (started .. completed or compensated) is one
    record; with ``single``, one record per event. The trips listener's rows and timelines
    are the same either way."""
    stack = OrderStack(kafka_bootstrap, topic_prefix, tmp_path / "coordinator")
    worker = ListenerWorker(
        bootstrap=kafka_bootstrap,
        prefix=topic_prefix,
        database_url=sqlite_url(tmp_path, "unused.db"),
        listeners=[TRIPS],
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

    trips = {f"{form}-{n}": ("Lisbon" if n % 3 else "Nowhere") for n in range(6)}
    try:
        migrated = worker.cli("migrate", TRIPS)
        assert migrated.proc is not None and migrated.proc.returncode == 0, migrated.output()
        settings = stack.settings()
        stack.coordinator(
            definitions="examples.trips.saga:TRIP_SAGA", env={"SAGA_LIFECYCLE_FORMAT": form}
        )
        worker.start()
        async with (
            SagaClient(settings) as client,
            Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
        ):
            for key, destination in trips.items():
                request = {"trip_id": key, "destination": destination}
                await client.start("trip_booking", request, saga_id=key, business_key=key)
            await life.wait(
                list(trips), statuses={"saga_completed", "saga_compensated"}, timeout=120
            )
            views = {
                key: trip(key, "compensated" if where == "Nowhere" else "completed")
                for key, where in trips.items()
            }
        assert life.undecodable == 0
        for key, view in views.items():
            records = [seqs for k, seqs in life.per_record if k == key.encode()]
            events = life.unique(key)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert events[-1].type in ("saga_completed", "saga_compensated")
            if form == "batch":
                assert records == [[e.seq for e in events]], f"{key}: one record, in seq order"
            else:
                assert records == [[e.seq] for e in events], f"{key}: one record per event"
            assert [t["seq"] for t in view["timeline"]] == [e.seq for e in events]
            assert view["last_seq"] == len(events)
        assert worker.get("/listeners/stats").json()["dead_letters"] == 0
        assert worker.stop() == 0, worker.output()[-3000:]
    finally:
        worker.close()
        stack.close()
