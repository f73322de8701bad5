"""A participant written in Node.js (examples/remote_participant/participant.js, kafkajs from
npm) runs a saga step against the real broker and a real coordinator worker: success, a
business failure with compensation, an undo that carries the step's own output, and a lost
reply retried with the same idempotency key and applied once."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from coordinator import CoordinatorSettings, SagaClient
from coordinator._topics import ensure_topics
from coordinator._watch import partition_for
from examples.remote_participant.saga import Checkout
from infra.processes import ROOT, Process, free_port
from tests.services import unavailable

pytestmark = pytest.mark.integration

PARTICIPANT = ROOT / "examples" / "remote_participant"


@pytest.fixture(scope="module")
def node() -> str:
    node = shutil.which("node")
    if node is None or not (PARTICIPANT / "node_modules" / "kafkajs").is_dir():
        unavailable(
            "Node.js and kafkajs are needed: install Node.js 18+ and run `npm ci` in "
            "examples/remote_participant (`make test` does)"
        )
    assert node is not None
    return node


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> CoordinatorSettings:
    return CoordinatorSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        app_id=f"{topic_prefix}-coordinator",
        partitions=4,
        web_port=free_port(),
        datadir=tmp_path,
        definitions=["examples.remote_participant.saga:CHECKOUT"],
    )


def environment(settings: CoordinatorSettings) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SAGA_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SAGA_TOPIC_PREFIX": settings.topic_prefix,
        "SAGA_APP_ID": settings.app_id,
        "SAGA_PARTITIONS": str(settings.partitions),
        "SAGA_WEB_PORT": str(settings.web_port),
        "SAGA_DATADIR": str(settings.datadir),
        "SAGA_DEFINITIONS": ",".join(settings.definitions),
    }


@contextlib.contextmanager
def running(proc: Process, ready: str) -> Iterator[Process]:
    proc.start()
    try:
        proc.wait_for_output(ready, timeout=90)
        yield proc
    finally:
        proc.stop()
        proc.close()


@pytest.fixture
async def participant(node: str, settings: CoordinatorSettings) -> AsyncIterator[Process]:
    await ensure_topics(settings, ["payment-node"])
    proc = Process(
        [str(PARTICIPANT / "participant.js")],
        env=environment(settings),
        name="node-participant",
        executable=node,
    )
    with running(proc, '"event":"ready"'):
        yield proc


@pytest.fixture
def worker(settings: CoordinatorSettings, participant: Process) -> Iterator[Process]:
    proc = Process(["-m", "coordinator", "worker"], env=environment(settings), name="worker")
    with running(proc, "coordinator ready"):
        yield proc


def decisions(participant: Process, key: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in participant.output().splitlines() if line.startswith("{")]
    return [d for d in lines if d.get("key") == key]


async def test_node_participant_end_to_end(
    settings: CoordinatorSettings, participant: Process, worker: Process
) -> None:
    prefix = settings.topic_prefix
    cases = {
        "ok": Checkout(order_id=f"{prefix}-ok", amount_cents=1999),
        "declined": Checkout(order_id=f"{prefix}-declined", amount_cents=250_000),
        "undone": Checkout(order_id=f"{prefix}-undone", amount_cents=500, refuse_receipt=True),
        "lost": Checkout(order_id=f"{prefix}-lost", amount_cents=700, lose_first_reply=True),
    }
    async with SagaClient(settings) as client:
        ids = {
            name: await client.start("checkout", order, business_key=order.order_id, confirm=True)
            for name, order in cases.items()
        }
        views = {
            name: await client.wait(i, timeout=timedelta(seconds=90)) for name, i in ids.items()
        }
    charge = {name: f"{saga_id}:charge:do" for name, saga_id in ids.items()}
    events = {name: [d["event"] for d in decisions(participant, k)] for name, k in charge.items()}

    assert views["ok"].status == "completed"
    assert events["ok"] == ["request", "applied"]

    # a business failure in Node.js: definite, so the charge itself is not undone, and
    # the step before it is compensated
    assert views["declined"].status == "compensated"
    assert [s.status for s in views["declined"].steps] == ["compensated", "failed", "pending"]
    assert views["declined"].error is not None
    assert views["declined"].error.type == "CardDeclined"
    assert events["declined"] == ["request", "declined"]

    # a later step refuses: Node.js undoes its charge, from the output in the request
    assert views["undone"].status == "compensated"
    assert [s.status for s in views["undone"].steps] == ["compensated", "compensated", "failed"]
    undone = next(d for d in decisions(participant, charge["undone"]) if d["event"] == "undone")
    assert undone["charge_id"] == f"ch-{charge['undone']}"

    # the first answer is lost: the deadline retries the same key, applied once
    assert views["lost"].status == "completed"
    lost = decisions(participant, charge["lost"])
    assert [(d["event"], d["attempt"]) for d in lost] == [
        ("request", 1),
        ("applied", 1),
        ("reply_lost", 1),
        ("request", 2),
        ("replayed", 2),
    ]

    # kafkajs' DefaultPartitioner is murmur2 like the Java client and the coordinator:
    # every Node.js reply landed on its saga's own inbox partition
    replies = await node_replies(settings)
    assert {r[0] for r in replies} == set(ids.values())
    for saga_id, partition in replies:
        assert partition == partition_for(saga_id, settings.partitions), saga_id


async def node_replies(settings: CoordinatorSettings) -> list[tuple[str, int]]:
    consumer = AIOKafkaConsumer(
        settings.topics.inbox,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        found: list[tuple[str, int]] = []
        while batch := await consumer.getmany(timeout_ms=1000):
            for records in batch.values():
                for record in records:
                    message = json.loads(record.value)
                    if message.get("kind") == "result" and message.get("step") == "charge":
                        assert record.key == message["saga_id"].encode()
                        found.append((message["saga_id"], record.partition))
        return found
    finally:
        await consumer.stop()
