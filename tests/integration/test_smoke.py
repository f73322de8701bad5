"""The stack is real: a Faust worker with an agent and a table runs against the broker,
its changelog topic exists on the broker, and a restart restores the table from it."""

from __future__ import annotations

import asyncio
import tempfile

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from infra.processes import Process

pytestmark = pytest.mark.integration


async def _produce(bootstrap: str, topic: str, keys: list[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key in keys:
            await producer.send_and_wait(topic, b"x", key=key.encode())
    finally:
        await producer.stop()


async def _collect(consumer: AIOKafkaConsumer, count: int, limit: float) -> list[str]:
    seen: list[str] = []

    async def run() -> None:
        while len(seen) < count:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                seen.extend(r.value.decode() for r in records)

    await asyncio.wait_for(run(), limit)
    return seen


async def test_worker_processes_messages_and_restores_table(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    source, sink, app_id = f"{topic_prefix}-in", f"{topic_prefix}-out", f"{topic_prefix}-smoke"
    with tempfile.TemporaryDirectory() as datadir:
        env = {
            "SMOKE_BROKER": kafka_bootstrap,
            "SMOKE_APP_ID": app_id,
            "SMOKE_SOURCE": source,
            "SMOKE_SINK": sink,
            "SMOKE_DATADIR": datadir,
        }
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", group_id=None
        )
        worker = Process(
            ["-m", "tests.integration.smoke_app", "worker", "-l", "info"], env=env, name="smoke"
        )
        try:
            worker.start()
            worker.wait_for_output("SMOKE-READY", timeout=90)
            await _produce(kafka_bootstrap, source, ["a", "b", "a", "a", "b"])
            await consumer.start()
            consumer.subscribe([sink])
            first = await _collect(consumer, 5, limit=60)
            assert sorted(first) == sorted(["a=1", "b=1", "a=2", "a=3", "b=2"])

            admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
            await admin.start()
            try:
                topics = set(await admin.list_topics())
            finally:
                await admin.close()
            assert f"{app_id}-counts-changelog" in topics

            assert worker.stop() == 0, worker.output()[-3000:]

            worker = Process(
                ["-m", "tests.integration.smoke_app", "worker", "-l", "info"],
                env=env,
                name="smoke-restart",
            )
            worker.start()
            worker.wait_for_output("SMOKE-READY", timeout=90)
            await _produce(kafka_bootstrap, source, ["a", "b"])
            second = await _collect(consumer, 2, limit=60)
            # Counts continue from the restored table, not from zero.
            assert sorted(second) == ["a=4", "b=3"], worker.output()[-3000:]
        finally:
            worker.stop()
            worker.close()
            await consumer.stop()
