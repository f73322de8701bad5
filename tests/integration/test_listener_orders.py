"""An order retried as a second saga, through the worker on the real broker and databases.

The first saga is compensated (payment declined), the second completes: the order shows
completed whatever order the two sagas' events arrive in, and both timelines are kept.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import zip_longest
from pathlib import Path

import pytest

from tests.integration.listener_kit import (
    ListenerWorker,
    count_rows,
    produce,
    sqlite_url,
    wait_applied,
)
from tests.listener_events import order_saga

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path, "orders.db")
    return str(request.getfixturevalue("pg_url"))


async def test_second_saga_of_an_order_wins_and_both_timelines_are_kept(
    kafka_bootstrap: str, topic_prefix: str, url: str
) -> None:
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    first = order_saga("o7-saga-1", "payment_declined", order_id="o7", start=t0)
    second = order_saga("o7-saga-2", "completed", order_id="o7", start=t0 + timedelta(minutes=1))
    # Interleaved, and the first saga's last (compensation) events arrive after the
    # second saga completed: its seqs (up to 13) are higher than the second's (12).
    events = [e for pair in zip_longest(second, first[:6]) for e in pair if e] + first[6:]
    worker = ListenerWorker(bootstrap=kafka_bootstrap, prefix=topic_prefix, database_url=url)
    try:
        assert worker.cli("migrate").proc.returncode == 0  # type: ignore[union-attr]
        worker.start()
        await produce(kafka_bootstrap, worker.lifecycle_topic, events)
        wait_applied(url, len(events), worker)

        order = worker.get("/orders/o7").json()
        assert (order["saga_id"], order["status"]) == ("o7-saga-2", "completed")
        assert [e["seq"] for e in order["timeline"]] == list(range(1, len(second) + 1))
        (earlier,) = order["history"]
        assert (earlier["saga_id"], earlier["status"]) == ("o7-saga-1", "cancelled")
        assert [e["seq"] for e in earlier["timeline"]] == list(range(1, len(first) + 1))
        assert earlier["last_error"] == "CardDeclined: charge_payment failed"
        assert count_rows(url, "orders") == 2

        shown = worker.cli("order-status", "o7")
        assert shown.proc is not None and shown.proc.returncode == 0, shown.output()
        assert "status:   completed" in shown.output()
        assert "earlier saga o7-saga-1: cancelled (13 events)" in shown.output()
        completed = worker.get("/orders?status=completed").json()["orders"]
        assert [o["business_key"] for o in completed] == ["o7"]
        assert worker.get("/orders?status=cancelled").json()["orders"] == []
        assert worker.stop() == 0, worker.output()[-3000:]
    finally:
        worker.close()
