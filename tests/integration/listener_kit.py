"""Run the listener worker as a real process and feed it lifecycle events."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from coordinator.events import DeadLetter
from infra.processes import Process, free_port
from tests.integration.polling import eventually
from tests.listener_events import EXPECTED

PARTITIONS = 4


class ListenerWorker:
    """``python -m listeners worker [LISTENER ...]`` against a topic prefix and a database."""

    def __init__(
        self,
        *,
        bootstrap: str,
        prefix: str,
        database_url: str,
        listeners: Sequence[str] = (),
    ) -> None:
        self.prefix, self.database_url = prefix, database_url
        self.listeners = list(listeners)
        self.web_port = free_port()
        self._data = tempfile.TemporaryDirectory(prefix="listener-data-")
        self.env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "LISTENER_DATABASE_URL": database_url,
            "LISTENER_APP_ID": f"{prefix}-listeners",
            "LISTENER_TOPIC_PREFIX": prefix,
            "LISTENER_PARTITIONS": str(PARTITIONS),
            "LISTENER_WEB_PORT": str(self.web_port),
            "LISTENER_DATA_DIR": self._data.name,
            "LISTENER_BATCH_SIZE": "200",
            "LISTENER_BATCH_WINDOW": "0.1",
            "LISTENER_RETRY_MAX_DELAY": "1",
        }
        self.process: Process | None = None
        self.runs = 0

    @property
    def lifecycle_topic(self) -> str:
        return f"{self.prefix}.lifecycle"

    def cli(self, *args: str, timeout: float = 120) -> Process:
        """Run ``python -m listeners ARGS`` to completion."""
        proc = Process(["-m", "listeners", *args], env=self.env, name=f"listeners-{args[0]}")
        proc.start()
        assert proc.proc is not None
        proc.proc.wait(timeout)
        return proc

    def start(self) -> None:
        self.runs += 1
        self.process = Process(
            ["-m", "listeners", "worker", *self.listeners, "-l", "info"],
            env=self.env,
            name=f"listener{self.runs}",
        )
        self.process.start()
        self.process.wait_for_output("LISTENER-READY", timeout=90)

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def output(self) -> str:
        return self.process.output() if self.process else ""

    def stop(self) -> int | None:
        return self.process.stop() if self.process else None

    def kill(self) -> None:
        if self.process:
            self.process.kill()

    def close(self) -> None:
        if self.process:
            self.process.stop(timeout=15)
            self.process.close()
        self._data.cleanup()

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.web_port}{path}", timeout=10)


async def produce(
    bootstrap: str, topic: str, events: Iterable[Any], raw: Iterable[bytes] = ()
) -> int:
    """Send events (keyed by saga id) and raw garbage values; returns how many were sent."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_request_size=8 * 1024 * 1024
    )
    await producer.start()
    sent = 0
    try:
        for event in events:
            await producer.send(topic, event.to_json(), key=event.saga_id.encode())
            sent += 1
        for value in raw:
            await producer.send(topic, value, key=b"garbage")
            sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def create_topic(bootstrap: str, topic: str, config: dict[str, str]) -> None:
    """Create ``topic`` with ``PARTITIONS`` partitions and ``config`` (before any worker)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, PARTITIONS, 1, topic_configs=config)], validate_only=False
        )
    finally:
        await admin.close()


def table_rows(url: str, table: str, order_by: str) -> list[tuple[Any, ...]]:
    """Every row of ``table``, ordered, timestamps normalised to UTC ISO strings."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY {order_by}")).all()
    finally:
        engine.dispose()
    return [tuple(_plain(value) for value in row) for row in rows]


async def read_dead_letters(bootstrap: str, topic: str, count: int) -> list[DeadLetter]:
    """Dead letters on ``topic`` until ``count`` distinct source records were seen (or 30 s)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    letters: list[DeadLetter] = []
    try:
        for _ in range(60):
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                letters.extend(DeadLetter.model_validate_json(r.value) for r in records)
            if len({(x.partition, x.offset) for x in letters}) >= count:
                break
    finally:
        await consumer.stop()
    return letters


def count_rows(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def orders_table(url: str) -> list[tuple[Any, ...]]:
    """Every ``orders`` row, ordered, timestamps normalised to UTC ISO strings."""
    return table_rows(url, "orders", "order_id, saga_id")


def _plain(value: Any) -> Any:
    from listeners._rows import utc

    if hasattr(value, "isoformat") and hasattr(value, "tzinfo"):
        return utc(value).isoformat()
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] in " T":
        from datetime import datetime

        return utc(datetime.fromisoformat(value)).isoformat()
    return value


def wait_applied(
    url: str,
    events: int,
    worker: ListenerWorker,
    timeout: float = 120,
    table: str = "order_events",
) -> None:
    """Poll until ``table`` (a timeline) has ``events`` rows; the worker must stay alive."""

    def done() -> bool:
        assert worker.alive(), f"listener worker died:\n{worker.output()[-4000:]}"
        try:
            return count_rows(url, table) >= events
        except sa.exc.OperationalError:
            return False

    try:
        eventually(done, timeout=timeout, what=f"{events} events applied to {url}")
    except AssertionError:
        print(worker.output()[-4000:])
        raise


def check_statuses(url: str, sagas: dict[str, tuple[str, list[Any]]]) -> None:
    """Every saga's order ends in the expected status, service, step and ``last_seq``."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = {
                row.saga_id: row
                for row in conn.execute(
                    sa.text(
                        "SELECT saga_id, status, current_service, current_step, last_seq"
                        " FROM orders"
                    )
                )
            }
    finally:
        engine.dispose()
    assert set(rows) == set(sagas)
    for saga_id, (outcome, events) in sagas.items():
        want = EXPECTED[outcome]
        row = rows[saga_id]
        got = (row.status, row.current_service, row.current_step, row.last_seq)
        assert got == (want.status, want.current_service, want.current_step, len(events)), (
            saga_id,
            outcome,
        )


def sqlite_url(directory: Path, name: str) -> str:
    return f"sqlite:///{directory / name}"
